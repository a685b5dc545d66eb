"""One module per `lipkit` subcommand (import_model registers `import`, a Python keyword). Each
exposes `add_parser(subparsers)` (cheap: no heavy imports) that registers its arguments and sets
`func(args) -> int`."""

COMMANDS = ("train", "eval", "report", "demo", "bench", "data", "theory", "experiment", "export", "import_model", "merge",
            "interpolate")
