// The dashboard's shell: the token prompt, the stream indicator and the router
// (#/ fleet, #/agents/ID one agent, #/commands history, #/jobs and #/jobs/ID). Each view
// owns one event stream.

import { getToken, onUnauthorized, setToken } from "./api.js";
import { agentView } from "./agent.js";
import { commandsView } from "./commands.js";
import { fleetView } from "./fleet.js";
import { jobsView } from "./jobs.js";

const view = document.getElementById("view");
const login = document.getElementById("login");
const streamBadge = document.getElementById("stream");
const forget = document.getElementById("forget");
let current = null;

function showLogin(why) {
  document.getElementById("login-why").textContent = why;
  login.hidden = false;
  view.hidden = true;
  document.getElementById("token").focus();
}

onUnauthorized((failure) => {
  const why = getToken()
    ? `The token was refused (${failure.status} ${failure.code}): ${failure.message}`
    : "This server needs an API token.";
  if (current) current.stop();
  current = null;
  showLogin(why);
});

document.getElementById("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("token");
  setToken(input.value.trim());
  input.value = "";
  route();
});

forget.addEventListener("click", () => {
  setToken(null);
  route();
});

export function streamState(state, detail) {
  streamBadge.textContent = state === "error" ? `events: ${detail}` : state;
  streamBadge.className = `stream ${state}`;
  streamBadge.title = detail || "the live event stream";
}

function route() {
  if (current) current.stop();
  login.hidden = true;
  view.hidden = false;
  forget.hidden = !getToken();
  streamState("connecting");
  const hash = decodeURIComponent(location.hash.replace(/^#/, "")) || "/";
  const agent = hash.match(/^\/agents\/(.+)$/);
  let name = "fleet";
  if (agent) {
    current = agentView(view, agent[1], streamState);
    name = "agent";
  } else if (hash.startsWith("/commands")) {
    current = commandsView(view, streamState);
    name = "commands";
  } else if (hash.startsWith("/jobs")) {
    const job = hash.match(/^\/jobs\/(.+)$/);
    current = jobsView(view, job ? job[1] : null, streamState);
    name = "jobs";
  } else {
    current = fleetView(view, streamState);
  }
  document.body.dataset.view = name;
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === name);
  }
}

window.addEventListener("hashchange", route);
route();
