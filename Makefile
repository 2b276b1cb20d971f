# Thin aliases for ./dev (which needs only bash and Python >= 3.11).
.PHONY: test bench venv
test:
	./dev test
bench:
	./dev bench
venv:
	./dev venv
