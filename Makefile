# Thin aliases for ./dev (which needs only bash and Python >= 3.11).
.PHONY: serve test bench venv
serve:
	./dev serve
test:
	./dev test
bench:
	./dev bench
venv:
	./dev venv
