"""bluegreen tests; a package so that tests/proxy/ never shadows the real `proxy` package."""
