"""`python -m selfinstruct ...`: a thin command-line skin over the library.

Every command takes --db (default: $SELFINSTRUCT_DB, else data/pool.duckdb).
Errors a user can fix end the command with exit code 2 and a plain message.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import seeds as seeds_mod
from .store import DB_ENV_VAR, Pool, PoolError, default_db_path


class CLIError(Exception):
    """Ends the command with a message and exit code 2."""


def _db_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--db", type=Path, default=argparse.SUPPRESS,
                        help=f"pool file (default: ${DB_ENV_VAR} or data/pool.duckdb)")
    return parent


def build_parser() -> argparse.ArgumentParser:
    db = _db_parent()
    parser = argparse.ArgumentParser(
        prog="python -m selfinstruct", parents=[db],
        description="Build instruction-tuning data the Self-Instruct way.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    seeds = sub.add_parser("seeds", help="import and list seed tasks", parents=[db])
    seeds_sub = seeds.add_subparsers(dest="seeds_command", required=True, metavar="ACTION")
    imp = seeds_sub.add_parser("import", parents=[db],
                               help="import a seed file (Self-Instruct JSONL, Alpaca JSON or CSV)")
    imp.add_argument("file", type=Path, help="the seed file, or 'starter' for the bundled starter seeds")
    imp.add_argument("--format", choices=seeds_mod.FORMATS, help="override the format guessed from the name")
    imp.add_argument("--valid-only", action="store_true",
                     help="import the valid rows and skip the bad ones (default: all or nothing)")
    imp.set_defaults(func=cmd_seeds_import)
    lst = seeds_sub.add_parser("list", parents=[db], help="list the seed tasks in the pool")
    lst.add_argument("--json", action="store_true", help="one JSON object per line")
    lst.set_defaults(func=cmd_seeds_list)

    info = sub.add_parser("info", parents=[db], help="counts of everything in the pool")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(func=cmd_info)

    return parser


def open_pool(args) -> Pool:
    return Pool.open(getattr(args, "db", None) or default_db_path())


def cmd_seeds_import(args) -> int:
    with open_pool(args) as pool:
        if str(args.file) == "starter":
            result = seeds_mod.load_starter_seeds(pool, actor="cli")
            source = "the starter seeds"
        else:
            if not args.file.exists():
                raise CLIError(f"No such file: {args.file}")
            result = seeds_mod.import_seeds(pool, args.file, fmt=args.format,
                                            valid_only=args.valid_only, actor="cli")
            source = str(args.file)
        print(f"Imported {result.imported} seed task(s) with {result.instances} instance(s) "
              f"from {source} ({result.report.format}) into {pool.path}.")
        for issue in result.report.issues:
            print(f"  skipped {issue}")
        print(f"The pool now holds {pool.counts().seeds} seed task(s).")
    return 0


def cmd_seeds_list(args) -> int:
    with open_pool(args) as pool:
        tasks = pool.seed_tasks()
    if args.json:
        for task in tasks:
            print(json.dumps(task, ensure_ascii=False))
        return 0
    if not tasks:
        print("No seed tasks yet. Import some: python -m selfinstruct seeds import starter")
        return 0
    for task in tasks:
        flag = " [classification]" if task["is_classification"] else ""
        print(f"{task['id']:>5}  {task['instruction']}{flag}  ({len(task['instances'])} instance(s))")
    print(f"{len(tasks)} seed task(s).")
    return 0


def cmd_info(args) -> int:
    with open_pool(args) as pool:
        counts = pool.counts().as_dict()
        path = pool.path
    if args.json:
        print(json.dumps({"db": str(path), **counts}))
        return 0
    print(f"Pool: {path}")
    width = max(len(k) for k in counts)
    for key, value in counts.items():
        print(f"  {key.replace('_', ' '):<{width}}  {value:>8,}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except seeds_mod.SeedImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (CLIError, PoolError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
