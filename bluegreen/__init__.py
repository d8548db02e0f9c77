"""The `bluegreen` command's entry point (`bluegreen.cli`); the product itself lives in `proxy`,
`simulator` and `loadtest`."""
