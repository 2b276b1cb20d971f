# Thin aliases for ./dev (which needs only bash and Python >= 3.11).
.PHONY: demo serve test bench venv
demo:
	./dev demo
serve:
	./dev serve
test:
	./dev test
bench:
	./dev bench
venv:
	./dev venv
