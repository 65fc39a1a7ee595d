"""`selfinstruct ...` (or `python -m selfinstruct ...`): a thin command-line skin over the library.

Every command takes --db (default: $SELFINSTRUCT_DB, else data/pool.duckdb).
Errors a user can fix end the command with exit code 2 and a plain message.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

from . import seeds as seeds_mod
from .actions import ActionError
from .model import (COSINE_THRESHOLD, EXPORT_FORMATS, FAILED, FINISHED, INTERRUPTED, KEEP_RULE, RESUMABLE_STATUSES,
                    ROUGE_THRESHOLD, UNFINISHED_STATUSES)
from .store import DB_ENV_VAR, Pool, PoolError, damage_error, default_db_path


def _format_of(allowed):
    """An argparse type for --format: a format's name, an alias such as self-instruct, or a file
    type only one format has; "jsonl" is answered with the JSONL formats (export.format_name)."""
    def read(text: str) -> str:
        from .export.formats import format_name

        try:
            return format_name(text, allowed)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return read


def _duration(text: str) -> float:
    """A length of time as typed: seconds ("90"), or with a unit ("90s", "10m", "1.5h")."""
    scale = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(text.strip()[-1:].lower(), None)
    number = text.strip()[:-1] if scale else text.strip()
    try:
        seconds = float(number) * (scale or 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (say 600, 90s, 10m or 1h)") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError("a duration must be more than 0")
    return seconds


def _add_patience(parser) -> None:
    from .llm import RATE_LIMIT_PATIENCE_S, duration_words

    parser.add_argument("--rate-limit-patience", type=_duration, metavar="TIME",
                        help="how long nothing but 429 (rate limited) answers may go on before the run ends "
                             f"failed (default {duration_words(RATE_LIMIT_PATIENCE_S)}); 600, 90s, 10m, 1h")


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
        prog="selfinstruct", parents=[db],
        description="Build instruction-tuning data the Self-Instruct way.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    seeds = sub.add_parser("seeds", help="import and list seed tasks", parents=[db])
    seeds_sub = seeds.add_subparsers(dest="seeds_command", required=True, metavar="ACTION")
    imp = seeds_sub.add_parser("import", parents=[db],
                               help="import a seed file (Self-Instruct JSONL, Alpaca JSON or CSV)")
    imp.add_argument("file", type=Path, help="the seed file, or 'starter' for the bundled starter seeds")
    imp.add_argument("--format", type=_format_of(seeds_mod.FORMATS), metavar="{" + ",".join(seeds_mod.FORMATS) + "}",
                     help="override the format guessed from the name")
    imp.add_argument("--valid-only", action="store_true",
                     help="import the valid rows and skip the bad ones (default: all or nothing)")
    imp.set_defaults(func=cmd_seeds_import)
    lst = seeds_sub.add_parser("list", parents=[db], help="list the seed tasks in the pool")
    lst.add_argument("--json", action="store_true", help="one JSON object per line")
    lst.set_defaults(func=cmd_seeds_list)

    info = sub.add_parser("info", parents=[db], help="counts of everything in the pool")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(func=cmd_info)

    gen = sub.add_parser("generate", parents=[db], help="run Self-Instruct rounds against a model",
                         description="Grow the pool round by round. By default a small language model "
                                     "answers on this machine (--local: SmolLM2-135M-Instruct, bundled, "
                                     "through llama.cpp; good for trying the loop, too small for a real "
                                     "dataset: use a bigger --gguf or --base-url for that). With --offline "
                                     "the demo server answers instantly (it replays examples; it is not a "
                                     "language model). --resume continues a run, with any of the "
                                     "connection, limit and stop settings below changed for it.")
    backend = gen.add_mutually_exclusive_group()
    backend.add_argument("--local", action="store_true",
                         help="a GGUF model served on this machine by llama.cpp (the default when neither "
                              "--base-url nor --offline is given): the bundled SmolLM2-135M-Instruct, or --gguf")
    backend.add_argument("--offline", action="store_true",
                         help="use the offline demo server (replays bundled examples; not a language model)")
    backend.add_argument("--base-url", help="an OpenAI-compatible endpoint, e.g. https://api.openai.com/v1 "
                         "or http://localhost:8000/v1 (vLLM) or http://localhost:11434/v1 (Ollama)")
    gen.add_argument("--model", help="model name at the endpoint")
    gen.add_argument("--gguf", type=Path, metavar="PATH",
                     help="local model: the GGUF file to load (default: the bundled SmolLM2-135M-Instruct "
                          "Q4_1); implies --local")
    gen.add_argument("--threads", type=int, help="local model: CPU threads (default: all cores)")
    gen.add_argument("--ctx-size", type=int, metavar="TOKENS",
                     help="local model: tokens of context per request, prompt and answer together "
                          "(default 2048)")
    gen.add_argument("--api-key-env", metavar="VAR",
                     help="environment variable holding the API key (default: OPENAI_API_KEY); "
                          "the key is never stored")
    gen.add_argument("--mode", choices=("chat", "completion"),
                     help="chat completions or the completions endpoint (the paper's setting); default: "
                          "completion for the local model, chat otherwise")
    gen.add_argument("--structured", choices=("auto", "on", "off"),
                     help="chat mode: ask for JSON matching a schema per stage (structured output) instead of "
                          "the text layout; auto (default) sends one probe request to see whether the server "
                          "supports it")
    gen.add_argument("--generation", choices=("selfinstruct", "alpaca"), default="selfinstruct",
                     help="selfinstruct: numbered-list prompts then classify and instances; "
                          "alpaca: one request returns complete tasks")
    gen.add_argument("--rounds", type=int, help="stop after N rounds")
    gen.add_argument("--target", type=int, help="stop when the pool holds N generated instructions")
    gen.add_argument("--budget-usd", type=float, help="stop when this run has cost this much")
    gen.add_argument("--budget-tokens", type=int, help="stop when this run has used this many tokens")
    gen.add_argument("--price", type=float, nargs=2, metavar=("INPUT", "OUTPUT"),
                     help="USD per 1M input and output tokens for --model (default: the built-in "
                          "table for well-known OpenAI models, else 0); stored with the run")
    gen.add_argument("--requests-per-round", type=int, default=8)
    gen.add_argument("--example-lag", type=int, metavar="N",
                     help="round R takes generated examples from rounds up to R - N (default 2: the same seed "
                          "gives the same pool at any concurrency; more keeps more slots busy at a high "
                          "concurrency but changes the pool); fixed when the run starts")
    gen.add_argument("--concurrency", type=int, help="requests in flight at most (default 8; 2 for the "
                     "local model); lowered automatically while the endpoint answers 429")
    gen.add_argument("--rpm", type=float, help="your provider's requests-per-minute limit")
    gen.add_argument("--tpm", type=float, help="your provider's tokens-per-minute limit")
    gen.add_argument("--timeout", type=float, metavar="SECONDS",
                     help="deadline for each whole request attempt (default 60; 300 for the local model)")
    gen.add_argument("--max-retries", type=int, help="retries per request before it counts as failed (default 5)")
    _add_patience(gen)
    gen.add_argument("--max-answer-bytes", type=int,
                     help="answers larger than this are cut and rejected as oversize (default 1000000)")
    gen.add_argument("--threshold", type=float, default=ROUGE_THRESHOLD, help="ROUGE-L novelty threshold (reject above)")
    gen.add_argument("--cosine", type=_cosine_arg, metavar="COS",
                     help=f"the semantic novelty gate: reject a candidate whose cosine with a pool instruction is "
                          f"above COS (default {COSINE_THRESHOLD}, with the bundled WordLlama vectors); 'off' turns "
                          "it off (vectors are still stored). Fixed for the run: a resume cannot change it")
    gen.add_argument("--embed-model", metavar="MODEL",
                     help="take the gate's vectors from MODEL at the run's endpoint (/v1/embeddings) instead of the "
                          "bundled embedder (an endpoint's vectors may vary, so a rerun may differ)")
    gen.add_argument("--seed", type=int, default=0, help="seed for prompt sampling")
    gen.add_argument("--steer", choices=("off", "coverage"), default="off",
                     help="coverage: draw in-context examples favouring thin topics of the pool, never from "
                          "topics marked avoid (each round's topics are stored; fixed for the run)")
    gen.add_argument("--batch", action="store_true",
                     help="send requests through the provider's Batch API (half price, up to 24 h per "
                          "batch; a round needs up to three batches)")
    gen.add_argument("--batch-discount", type=float, default=0.5,
                     help="batch price as a fraction of the list price (default 0.5)")
    gen.add_argument("--batch-poll", type=float, metavar="SECONDS",
                     help="how often to ask about open batches (default 30)")
    gen.add_argument("--resume", nargs="?", type=int, const=0, metavar="RUN_ID",
                     help="resume an interrupted, paused, failed or stopped run (the latest when no id is "
                          "given); any id, finished runs included")
    gen.add_argument("--estimate", action="store_true", help="print the pre-run estimate and exit")
    gen.set_defaults(func=cmd_generate)
    _add_judge_parser(sub, db)
    _add_evaluate_parser(sub, db)
    _add_semantic_parsers(sub, db)

    bat = sub.add_parser("batch", help="hand a run's ready requests to an offline batch engine "
                         "(vllm run-batch) and read its answers back")
    bat_sub = bat.add_subparsers(dest="batch_command", required=True, metavar="ACTION")
    bw = bat_sub.add_parser("write", parents=[db], help="write the run's ready requests as an OpenAI "
                            "batch input file (JSONL) for `vllm run-batch`")
    bw.add_argument("run_id", type=int)
    bw.add_argument("--out", type=Path, required=True, help="the JSONL file to write")
    bw.set_defaults(func=cmd_batch_write)
    br = bat_sub.add_parser("read", parents=[db], help="import a batch output file (JSONL) and apply "
                            "its answers; then write the next batch")
    br.add_argument("file", type=Path)
    br.add_argument("--run", dest="run_id", type=int, help="the run (default: the run named in the file's "
                    "custom ids)")
    br.set_defaults(func=cmd_batch_read)

    srv = sub.add_parser("offline-server", help="serve the offline demo model over an OpenAI-compatible API")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--api-key", help="require this key (default: accept any)")
    srv.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    srv.add_argument("--seed", type=int, default=0)
    from .offline import add_judge_arguments, add_structured_output_argument   # one definition of the flags
    add_structured_output_argument(srv)
    add_judge_arguments(srv)
    srv.set_defaults(func=cmd_offline_server)

    refl = sub.add_parser("refilter", parents=[db], help="decide a run's candidates again with other "
                          "filter settings, from the stored responses (no model calls)")
    refl.add_argument("run_id", type=int)
    refl.add_argument("--threshold", type=float)
    refl.add_argument("--keywords", help="comma-separated keyword list replacing the run's")
    refl.add_argument("--cosine", type=_cosine_arg, metavar="COS",
                      help="the semantic gate's threshold to try, from the stored vectors ('off': none)")
    refl.add_argument("--apply", action="store_true", help="write the new decisions (audited)")
    refl.set_defaults(func=cmd_refilter)

    exp = sub.add_parser("export", parents=[db], help="write the curated pool in a training format, "
                         "with a dataset card",
                         description="Export seed tasks and accepted generated tasks with their kept "
                                     "instances. A path ending in .zip gets the data, README.md and "
                                     "charts in one archive; otherwise <name>_README.md (the dataset card) and "
                                     "<name>_charts/ are written beside the data file. Give --format, or "
                                     "--preset for a trainer: trl (chat messages, or prompt-completion), "
                                     "axolotl (alpaca, or chat; writes <name>_axolotl.yml) or "
                                     "llama-factory (alpaca, or chat; adds an entry to the folder's "
                                     "dataset_info.json).")
    exp.add_argument("--format", type=_format_of(EXPORT_FORMATS), metavar="{" + ",".join(EXPORT_FORMATS) + "}",
                     help="the data shape (optional with --preset, which picks one); self-instruct is "
                          "selfinstruct")
    exp.add_argument("--preset", choices=("trl", "axolotl", "llama-factory"),
                     help="hand-off to a trainer: picks the format and writes that trainer's config "
                          "beside the data (a TRL section in the card)")
    exp.add_argument("--license", help="the card's license as the Hugging Face Hub names it, e.g. "
                     "apache-2.0 or cc-by-4.0 (default: other, i.e. not chosen yet)")
    exp.add_argument("--language", help="the data's language code(s), comma-separated (default: en)")
    exp.add_argument("--out", required=True, type=Path, help="the data file (or a .zip archive)")
    exp.add_argument("--no-seeds", action="store_true", help="leave the seed tasks out")
    exp.add_argument("--no-generated", action="store_true", help="leave the generated tasks out")
    exp.add_argument("--run", action="append", metavar="ID", help="only generated tasks of these runs "
                     "(repeat, or give a comma-separated list)")
    exp.add_argument("--min-round", type=int, help="only generated tasks from this round number on")
    exp.add_argument("--max-round", type=int, help="only generated tasks up to this round number")
    exp.add_argument("--classification", choices=("only", "exclude"),
                     help="only classification tasks, or none of them (default: both)")
    exp.add_argument("--exclude-rescued", action="store_true", help="leave out tasks rescued from the rejects")
    exp.add_argument("--human-approved-only", action="store_true",
                     help="only generated tasks a person rescued, approved or edited")
    exp.add_argument("--exclude-invalid", action="store_true",
                     help="leave out what quality-study annotators labeled invalid (the majority of an item's "
                          "labels from every study together)")
    exp.add_argument("--judge-run", type=int, metavar="ID",
                     help="a model judge run whose verdicts filter the export (with --judge-drop) and whose "
                          "figures go in the dataset card")
    exp.add_argument("--judge-drop", metavar="QUESTIONS",
                     help="with --judge-run: leave out what the judge answered \"no\" to, comma-separated: "
                          "valid_task (drops the task), input_ok, output_ok (drop the instance)")
    exp.add_argument("--max-per-topic", type=int, metavar="N",
                     help="at most N tasks per topic (the pool's topics, computed if the pool changed), kept by the "
                          "duplicate groups' rule: seed tasks, then approved, then judged valid, then the earliest")
    exp.add_argument("--min-instruction-words", type=int)
    exp.add_argument("--max-instruction-words", type=int)
    exp.add_argument("--min-output-words", type=int)
    exp.add_argument("--max-output-words", type=int)
    exp.add_argument("--include-empty-tasks", action="store_true",
                     help="selfinstruct format: also write tasks with no instance left")
    exp.add_argument("--system-prompt", help="chat format: a system message on every conversation")
    exp.add_argument("--template-seed", type=int, default=0,
                     help="prompt-completion format: seed of the random template choice (default 0)")
    exp.add_argument("--no-card", action="store_true", help="write the data file only")
    exp.add_argument("--title", help="the dataset card's title")
    exp.add_argument("--dry-run", action="store_true", help="print what would be exported and exit")
    exp.set_defaults(func=cmd_export)

    return parser


JUDGE_EPILOG = """examples:
  selfinstruct judge --study 1 --offline
      judge every item of quality study 1 with the offline demo judge (a stand-in that
      answers instantly; useful to try the command, not a real judge)
  selfinstruct judge --pool --base-url https://api.openai.com/v1 --model gpt-4o-mini --limit 500
      judge the first 500 accepted instructions of the pool (one kept instance each) with
      gpt-4o-mini; the key comes from $OPENAI_API_KEY and is never stored
  selfinstruct judge --resume
      go on with the latest judge run that did not finish (only unanswered items are sent)

Quality studies are created on the Label page (the study's id is shown there). The verdicts
are stored apart from people's labels: they never count as a label, in the majority rule or in
"labeled invalid". At the end this command prints the judge's yes-rate per question and, for a
study that people labeled, how often the judge agrees with their majority answer. It exits 2
when the run fails (with what to do next) and 130 on Ctrl+C (with the command that resumes)."""


def _add_judge_parser(sub, db) -> None:
    jd = sub.add_parser(
        "judge", parents=[db], help="let a model answer the quality questions for a study's items or the pool",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=JUDGE_EPILOG,
        description="A model answers the quality study's three questions (valid task? input appropriate? "
                    "output acceptable? - yes, no or unsure, with a reason) for every item of a quality study "
                    "(--study) or for the pool's accepted generated instructions, one kept instance each (--pool). "
                    "Answers are stored as they arrive; Ctrl+C or a failure keeps them, and --resume sends only "
                    "the items not answered yet. With no backend named, the bundled local model answers "
                    "(small: use --base-url with a capable model for verdicts worth trusting).")
    what = jd.add_mutually_exclusive_group()
    what.add_argument("--study", type=int, metavar="ID", help="judge the items of this quality study")
    what.add_argument("--pool", action="store_true",
                      help="judge the pool: every accepted generated instruction with its first kept instance")
    what.add_argument("--resume", nargs="?", type=int, const=0, metavar="JUDGE_RUN_ID",
                      help="go on with a judge run (the latest unfinished one when no id is given)")
    backend = jd.add_mutually_exclusive_group()
    backend.add_argument("--local", action="store_true",
                         help="a GGUF model on this machine through llama.cpp (the default): the bundled "
                              "SmolLM2-135M-Instruct, or --gguf")
    backend.add_argument("--offline", action="store_true",
                         help="the offline demo judge (a deterministic stand-in, not a language model)")
    backend.add_argument("--base-url", help="an OpenAI-compatible endpoint, e.g. https://api.openai.com/v1 or "
                                            "http://localhost:8000/v1 (needs --model)")
    jd.add_argument("--model", help="model name at the endpoint")
    jd.add_argument("--gguf", type=Path, metavar="PATH", help="local model: the GGUF file (implies --local)")
    jd.add_argument("--threads", type=int, help="local model: CPU threads (default: all cores)")
    jd.add_argument("--ctx-size", type=int, metavar="TOKENS", help="local model: tokens of context per request")
    jd.add_argument("--api-key-env", metavar="VAR",
                    help="environment variable holding the API key (default: OPENAI_API_KEY); never stored")
    jd.add_argument("--mode", choices=("chat", "completion"),
                    help="chat completions or the completions endpoint (default: completion for the local "
                         "model, chat otherwise)")
    jd.add_argument("--structured", choices=("auto", "on", "off"),
                    help="chat mode: ask for a JSON verdict matching a schema; auto (default) probes the "
                         "server once")
    jd.add_argument("--limit", type=int, metavar="N", help="judge only the first N items")
    jd.add_argument("--concurrency", type=int, help="requests in flight at most (default 8; 2 for the local "
                                                   "model); lowered automatically while the endpoint answers 429")
    jd.add_argument("--timeout", type=float, metavar="SECONDS",
                    help="deadline for each whole request attempt (default 60; 300 for the local model)")
    jd.add_argument("--max-retries", type=int, help="retries per request before it counts as failed (default 5)")
    _add_patience(jd)
    jd.add_argument("--price", type=float, nargs=2, metavar=("INPUT", "OUTPUT"),
                    help="USD per 1M input and output tokens for --model (default: the built-in table)")
    jd.add_argument("--name", help="a name for the judge run")
    jd.set_defaults(func=cmd_judge)


def _add_semantic_parsers(sub, db) -> None:
    emb = sub.add_parser("embed", parents=[db], help="store sentence vectors for every instruction in the pool "
                         "that has none (resumable; nothing is embedded twice)",
                         description="Embed the pool's seed tasks and candidates (accepted and rejected) with the "
                                     "bundled WordLlama model, or an OpenAI-compatible /v1/embeddings with --base-url "
                                     "and --model. Vectors are stored per text and embedder; run it again after an "
                                     "interruption and it continues where it stopped.")
    emb.add_argument("--base-url", help="an OpenAI-compatible endpoint serving /v1/embeddings")
    emb.add_argument("--model", help="the embedding model's name at --base-url (e.g. text-embedding-3-small)")
    emb.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the API key "
                     "(default: OPENAI_API_KEY); the key is never stored")
    emb.add_argument("--batch-size", type=int, default=256, help="texts per stored batch (default 256)")
    emb.set_defaults(func=cmd_embed)

    dd = sub.add_parser("dedup", parents=[db], help="groups of near-duplicate instructions among the seed tasks "
                        "and accepted instructions, and (with --apply) one change removing all but one of each",
                        description="A group is a kept item and the items whose cosine with it is above the "
                                    f"threshold. The kept item is {KEEP_RULE}. --apply removes the other accepted "
                                    "instructions of every group as one audited change (undo it on the Pool page); "
                                    "seed tasks are never removed here: pick them on the Pool page's Duplicates view.")
    dd.add_argument("--cosine", type=float, default=COSINE_THRESHOLD, metavar="COS",
                    help=f"group items whose cosine with the kept item is above COS (default {COSINE_THRESHOLD})")
    dd.add_argument("--json", action="store_true", help="one JSON object per group per line: ids, instruction "
                    "texts, pairwise cosines")
    dd.add_argument("--apply", action="store_true", help="remove every group's other accepted instructions")
    dd.set_defaults(func=cmd_dedup)

    tp = sub.add_parser("topics", parents=[db], help="the pool's topics: clusters of its instructions by meaning, "
                        "with size, acceptance, rescue, labeled-invalid and judge-\"no\" shares",
                        description="Topics are computed once per pool state (seed tasks and accepted instructions, "
                                    "embedded with the bundled model) and stored; run it again after the pool "
                                    "grew and they are computed again.")
    tp.add_argument("--k", type=int, metavar="N", help="this many topics (default: chosen between 4 and 30)")
    tp.add_argument("--json", action="store_true", help="one JSON object per topic per line")
    tp.add_argument("--name-model", metavar="MODEL",
                    help="also ask MODEL at --base-url for one short name per topic (stored beside ours)")
    tp.add_argument("--base-url", help="the OpenAI-compatible endpoint serving --name-model")
    tp.add_argument("--api-key-env", metavar="VAR", default="OPENAI_API_KEY",
                    help="environment variable holding the key for --base-url (default: OPENAI_API_KEY)")
    tp.set_defaults(func=cmd_topics)


def _semantic_settings(args) -> dict:
    """A new run's embedder and cosine threshold from --cosine and --embed-model. Without WordLlama
    the run goes on without the gate (and says so), unless --cosine asked for it by value."""
    from . import embed

    cosine = None if args.cosine == "off" else (COSINE_THRESHOLD if args.cosine is None else args.cosine)
    if args.embed_model:
        return {"embedder": embed.EmbedderSpec(kind=embed.ENDPOINT, model=args.embed_model).to_dict(),
                "cosine_threshold": cosine}
    why = embed.bundled_available()
    if why is not None:
        if args.cosine not in (None, "off"):
            raise CLIError(why)
        print(f"{why} This run goes without the semantic gate.", file=sys.stderr)
        return {"embedder": None, "cosine_threshold": None}
    return {"embedder": embed.EmbedderSpec(kind=embed.BUNDLED).to_dict(), "cosine_threshold": cosine}


def _check_lag_unchanged(args, run_id: int, stored: dict) -> None:
    """The example lag decides a run's prompts: a resume keeps the one its run started with."""
    from .settings import RunConfig

    lag = RunConfig.from_dict(stored).lag()
    if args.example_lag is not None and args.example_lag != lag:
        raise CLIError(f"Run {run_id} takes its examples with a lag of {lag} round(s); a resume cannot change "
                       "it (the same answers must give the same pool). Start a new run for another lag.")


def _check_semantic_unchanged(args, run_id: int, stored: dict) -> None:
    """The embedder and the cosine threshold are fixed when a run starts (the same answers give
    the same pool): a resume that asks for others is refused."""
    from .settings import RunConfig

    cfg = RunConfig.from_dict(stored)
    if args.cosine is not None:
        wanted = None if args.cosine == "off" else args.cosine
        if wanted != cfg.cosine_threshold:
            raise CLIError(f"Run {run_id} uses the cosine threshold {cfg.cosine_threshold or 'off'}; a resume cannot "
                           "change it (the same answers must give the same pool). Start a new run for another one, "
                           f"or try it on this run's answers with: selfinstruct refilter {run_id} --cosine "
                           f"{args.cosine}")
    if args.embed_model and (cfg.embedder or {}).get("model") != args.embed_model:
        raise CLIError(f"Run {run_id} has its own embedder; a resume cannot change it. Start a new run for another.")


def _cosine_arg(text: str) -> float | str:
    if text.strip().lower() == "off":
        return "off"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a cosine between -1 and 1, or 'off', not {text!r}") from None
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a cosine is between -1 and 1, not {value}")
    return value


def _bar(total: int, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, file=sys.stderr, leave=False, disable=not sys.stderr.isatty())


def cmd_embed(args) -> int:
    from . import embed
    from .backend import OPENAI_COMPATIBLE, Backend

    if bool(args.base_url) != bool(args.model):
        raise CLIError("--base-url and --model go together (an embedding model at an endpoint); leave both out "
                       "for the bundled embedder.")
    if args.batch_size < 1:
        raise CLIError("--batch-size must be at least 1.")
    with open_pool(args) as pool:
        if args.base_url:
            backend = Backend(kind=OPENAI_COMPATIBLE, base_url=args.base_url, env_key_any_url=True,
                              api_key_env=args.api_key_env or "OPENAI_API_KEY")
            embedder = embed.EndpointEmbedder(backend, args.model)
        else:
            embedder = embed.bundled()
        todo = pool.embeddings.texts_without_vectors(embedder.name)
        if not todo:
            print(f"Every instruction in the pool already has a vector from {embedder.name}.")
            return 0
        print(f"Embedding {len(todo):,} text(s) with {embedder.name}...", flush=True)
        with _bar(len(todo), "text") as bar:
            def progress(done: int, total: int) -> None:
                bar.update(done - bar.n)
            try:
                done = embed.ensure_vectors(pool, embedder, todo, batch=args.batch_size, progress=progress)
            except (embed.EmbedderUnavailable, ValueError) as exc:
                raise CLIError(str(exc)) from None
            except LLMErrorType() as exc:
                raise CLIError(f"{exc} Nothing embedded so far is lost: run the command again to continue.") from None
        cost = embedder.cost_usd()
        print(f"Stored {done:,} vector(s) from {embedder.name} ({embedder.dim} dimensions)"
              + (f", ${cost:.4f}" if cost else "") + f". The pool holds {pool.embeddings.count(embedder.name):,}.")
    return 0


def LLMErrorType():
    from .llm import LLMError

    return LLMError


def cmd_dedup(args) -> int:
    from . import actions, embed
    from .novelty import rouge_l, tokenize
    from .semantic import find_duplicates

    if not -1.0 <= args.cosine <= 1.0:
        raise CLIError(f"--cosine is between -1 and 1, not {args.cosine}.")
    with open_pool(args) as pool:
        try:
            dups = find_duplicates(pool, embed.bundled(), args.cosine)
        except embed.EmbedderUnavailable as exc:
            raise CLIError(str(exc)) from None
        if args.json:
            for line in dups.as_json_lines():
                print(line)
        else:
            grouped = sum(1 + len(g.members) for g in dups.groups)
            print(f"{len(dups.groups):,} group(s) of near-duplicates (cosine above {args.cosine}, {dups.embedder}) "
                  f"holding {grouped:,} of {len(dups.items):,} instructions.")
            for n, g in enumerate(dups.groups, start=1):
                items = dups.group_items(g)
                print(f"Group {n}:")
                for k, item in enumerate(items):
                    label = "keep" if k == 0 else f"{g.cosines[k - 1]:.3f}, ROUGE-L " + \
                        f"{rouge_l(tokenize(items[0]['instruction']), tokenize(item['instruction'])):.3f}"
                    print(f"  {item['kind']} {item['id']} ({label}): {item['instruction']}")
        if args.apply:
            candidate_ids, _ = dups.removal()
            seeds_left = sum(1 for g in dups.groups for i in g.members if dups.items[i]["kind"] == "seed_task")
            if not candidate_ids:
                print("Nothing to remove." + (f" {seeds_left} seed task(s) in groups are left for a person to "
                                              "choose on the Pool page." if seeds_left else ""), file=sys.stderr)
                return 0
            outcome = actions.remove_duplicates(pool, candidate_ids, actor="cli",
                                                reason=f"near-duplicate (cosine > {args.cosine})")
            print(f"Removed {outcome.count:,} near-duplicate instruction(s) from {len(dups.groups):,} group(s) "
                  f"as one change (undo it on the Pool page)."
                  + (f" {seeds_left} seed task(s) in groups were left for a person to choose." if seeds_left else ""),
                  file=sys.stderr)
    return 0


def cmd_topics(args) -> int:
    import json

    from . import embed, topics

    try:
        settings = topics.TopicSettings(k=args.k)
        settings.validate()
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    with open_pool(args) as pool:
        try:
            with _bar(None, "text") as bar:
                set_id = topics.refresh(pool, settings, progress=lambda done, total: bar.update(done - bar.n))
        except embed.EmbedderUnavailable as exc:
            raise CLIError(str(exc)) from None
        if args.name_model:
            from .backend import OPENAI_COMPATIBLE, Backend
            from .llm import LLMError

            if not args.base_url:
                raise CLIError("--name-model needs --base-url (an OpenAI-compatible endpoint).")
            backend = Backend(kind=OPENAI_COMPATIBLE, base_url=args.base_url, api_key_env=args.api_key_env,
                              env_key_any_url=True)
            try:
                named = topics.name_with_model(pool, set_id, backend, model=args.name_model)
            except LLMError as exc:
                raise CLIError(f"{exc} The topics keep the names they had.") from None
            print(f"{args.name_model} named {len(named)} of the topics.", file=sys.stderr)
        rows = topics.topic_rows(pool, set_id)
        if args.json:
            for row in rows:
                print(json.dumps(row, ensure_ascii=False))
            return 0
        found = pool.topics.get_set(set_id)
        print(f"{found['k']} topic(s) over {found['fitted']:,} seed tasks and accepted instructions (topic set "
              f"{set_id}, {found['embedder']}).")
        def share(value) -> str:
            return "–" if value is None else f"{value:.0%}"

        for row in rows:
            print(f"{row['topic']:>3}. {row['name']}: {row['size']:,} ({share(row['seed_share'])} seeds), accepted "
                  f"{share(row['acceptance'])}, rescued {share(row['rescue'])}, labeled invalid "
                  f"{share(row['invalid_share'])} of {row['labeled']}, judge no {share(row['judge_no_share'])} of "
                  f"{row['judged']}" + (", avoid" if row["avoid"] else ""))
    return 0


def checked_name(path) -> None:
    """A typed file name under the one rule for names people type (datadir.check_typed_name)."""
    from .datadir import PathRefused, check_typed_name

    try:
        check_typed_name(str(path))
    except PathRefused as exc:
        raise CLIError(str(exc)) from None


def open_pool(args) -> Pool:
    if getattr(args, "db", None):
        checked_name(args.db)
    return Pool.open(getattr(args, "db", None) or default_db_path())


def cmd_seeds_import(args) -> int:
    with open_pool(args) as pool:
        if str(args.file) == "starter":
            result = seeds_mod.load_starter_seeds(pool, actor="cli")
            source = "the starter seeds"
        else:
            if not args.file.exists():
                raise CLIError(f"No such file: {args.file}")
            from tqdm import tqdm

            # A byte bar on stderr while the file is read (on a terminal only).
            with tqdm(total=args.file.stat().st_size, unit="B", unit_scale=True, file=sys.stderr, leave=False,
                      desc="reading", disable=not sys.stderr.isatty(), dynamic_ncols=True) as bar:
                def progress(done: int, total: int | None) -> None:
                    bar.update(done - bar.n)
                    if total is not None and done >= total:
                        bar.set_description("writing", refresh=True)

                result = seeds_mod.import_seeds(pool, args.file, fmt=args.format, valid_only=args.valid_only,
                                                actor="cli", progress=progress)
            source = str(args.file)
        if result.imported:
            print(f"Imported {result.imported:,} seed task(s) with {result.instances:,} instance(s) "
                  f"from {source} ({result.report.format}) into {pool.path}.")
            if result.skipped_summary():
                print(f"Skipped {result.skipped_summary()}.")
        else:
            print(result.summary(f"{source} ({result.report.format})"))
        invalid = [issue for issue in result.report.issues if issue.kind != seeds_mod.IN_POOL]
        for issue in invalid[:20]:
            print(f"  skipped {issue}")
        more = result.report.problem_count - result.report.in_pool - 20
        if more > 0:
            print(f"  ... and {more:,} more")
        print(f"The pool now holds {pool.counts().seeds:,} seed task(s).")
    return 0


def cmd_seeds_list(args) -> int:
    with open_pool(args) as pool:
        tasks = pool.seeds.seed_tasks()
    if args.json:
        for task in tasks:
            print(json.dumps(task, ensure_ascii=False))
        return 0
    if not tasks:
        print("No seed tasks yet. Import some: selfinstruct seeds import starter")
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
    labels = {key: key.replace("_", " ") for key in counts} | {"rounds": "rounds done"}
    width = max(len(label) for label in labels.values())
    for key, value in counts.items():
        print(f"  {labels[key]:<{width}}  {value:>8,}")
    print("  (instances: those of the seed tasks and accepted instructions, as an export holds them)")
    return 0


# generate's settings that a resumed run may change, by argparse name -> RunConfig field
_RESUME_FLAGS = {"model": "model", "base_url": "base_url", "api_key_env": "key_env", "timeout": "timeout_s",
                 "max_retries": "max_retries", "concurrency": "concurrency", "rpm": "rpm", "tpm": "tpm",
                 "max_answer_bytes": "max_answer_bytes", "rounds": "rounds", "target": "target",
                 "budget_usd": "budget_usd", "budget_tokens": "budget_tokens", "batch_poll": "batch_poll_s",
                 "threads": "threads", "ctx_size": "ctx_size", "structured": "structured",
                 "rate_limit_patience": "rate_limit_patience_s"}
_LOCAL_FLAGS = ("gguf", "threads", "ctx_size")


def _resume_overrides(args, kind: str | None, stored: dict, given: dict) -> dict:
    """The settings a resumed run (generation or judge) changes: those given, and the backend when
    --base-url, --offline or --local names another one than the run's."""
    from . import local
    from .backend import LOCAL, OFFLINE, OPENAI_COMPATIBLE

    overrides = dict(given)
    if args.base_url:
        overrides["backend"] = OPENAI_COMPATIBLE
    elif args.offline:
        overrides.update(backend=OFFLINE, base_url="")
    elif kind == LOCAL and stored.get("backend") != LOCAL:
        overrides.update(backend=LOCAL, base_url="")
        overrides.setdefault("gguf", "")
        overrides.setdefault("model", local.model_name(overrides["gguf"]))
    return overrides


def _backend_kind(args) -> str | None:
    """The backend the flags name (None: none named). --gguf, --threads and --ctx-size mean the
    local model, so they cannot go with another backend."""
    from .backend import LOCAL, OFFLINE, OPENAI_COMPATIBLE

    local_flags = [f"--{f.replace('_', '-')}" for f in _LOCAL_FLAGS if getattr(args, f) is not None]
    if local_flags and (args.base_url or args.offline):
        raise CLIError(f"{', '.join(local_flags)} set(s) the local model; leave out "
                       f"{'--base-url' if args.base_url else '--offline'} to use it.")
    if args.base_url:
        return OPENAI_COMPATIBLE
    if args.offline:
        return OFFLINE
    return LOCAL if args.local or local_flags else None


def _gguf_setting(args) -> str:
    """The GGUF path to store: '' for the bundled model (found again wherever it is installed),
    else the named file, checked now so a typo fails before the run starts."""
    from . import local

    if args.gguf is None:
        return ""
    try:
        return str(local.resolve_gguf(args.gguf))
    except local.LocalModelError as exc:
        raise CLIError(str(exc)) from None


def cmd_generate(args) -> int:
    from . import local
    from .backend import LOCAL, defaults_for
    from .monitor import run_headline
    from .settings import RunConfig
    from .pipeline import Runner, estimate_run, resume_command, start_run

    if args.base_url and not args.model and args.resume is None:   # a resumed run has its model
        raise CLIError("--base-url needs --model (the model's name at that endpoint).")
    kind = _backend_kind(args)
    given = {field: getattr(args, flag) for flag, field in _RESUME_FLAGS.items()
             if getattr(args, flag) is not None}
    if kind == LOCAL and args.gguf is not None:
        given["gguf"] = _gguf_setting(args)
        given.setdefault("model", local.model_name(given["gguf"]))
    with open_pool(args) as pool:
        if pool.counts().seeds == 0:
            loaded = seeds_mod.load_starter_seeds(pool, actor="cli")
            print(f"The pool had no seed tasks: loaded the {loaded.imported} starter seeds.")
        interrupted = pool.runs.mark_interrupted()
        overrides: dict = {}
        if args.resume is not None:
            run_id = args.resume or _latest_resumable(pool)
            run = pool.runs.get(run_id) if run_id else None
            if run is None:
                raise CLIError("There is no run to resume (none is interrupted, paused, failed or stopped)."
                               if not args.resume else f"There is no run {args.resume}.")
            if run["status"] not in RESUMABLE_STATUSES:
                raise CLIError(f"Run {run_id} is {run['status']}; it cannot be resumed.")
            if run["status"] == FINISHED:
                print(f"Run {run_id} had finished ({run['stop_reason']}); continuing it.")
            _check_semantic_unchanged(args, run_id, run["config"])
            _check_lag_unchanged(args, run_id, run["config"])
            overrides = _resume_overrides(args, kind, run["config"], given)
            if overrides:
                print("Changed for this run: " + ", ".join(f"{k}={v}" for k, v in sorted(overrides.items())))
        else:
            if interrupted:
                print(f"Run(s) {', '.join(map(str, interrupted))} had been interrupted; "
                      "resume with --resume.")
            kind = kind or LOCAL   # no backend named: a real model on this machine, with no key
            defaults = defaults_for(kind)
            config = RunConfig(**{
                "model": local.model_name(None) if kind == LOCAL else "selfinstruct-demo", "base_url": "",
                "backend": kind, "mode": args.mode or defaults["mode"],
                "concurrency": defaults["concurrency"], "timeout_s": defaults["timeout_s"],
                "generation": args.generation, "requests_per_round": args.requests_per_round,
                "structured": args.structured or "auto",
                "rouge_threshold": args.threshold, "seed": args.seed, "steer": args.steer,
                "price_per_m": list(args.price) if args.price else None, "batch": args.batch,
                "batch_discount": args.batch_discount, **_semantic_settings(args), **given,
                **({"example_lag": args.example_lag} if args.example_lag is not None else {})})
            if args.rounds is None and args.target is None and args.budget_usd is None \
                    and args.budget_tokens is None:
                config.rounds = 1
            try:
                config.validate()
            except ValueError as exc:
                raise CLIError(str(exc)) from None
            estimate = estimate_run(pool, config)
            print(f"Estimate: {estimate.rounds} round(s), ~{estimate.requests:,} requests, "
                  f"~{estimate.tokens:,} tokens, ~${estimate.cost_usd:.2f}, "
                  f"~{estimate.time_text}; {estimate.basis}.")
            if args.estimate:
                return 0
            run_id = start_run(pool, config, actor="cli")
        progress = _Progress(sys.stderr, pool=pool)
        with _SigintSeen() as sigint:
            try:
                try:
                    runner = Runner(pool, run_id, on_event=progress, overrides=overrides, actor="cli",
                                    env_key_any_url=True)   # the machine's own user sends their key anywhere
                except ValueError as exc:
                    raise CLIError(str(exc)) from None
                print(f"Run {run_id}: {runner.config.model} at {runner.backend.description}"
                      + (" (Batch API)" if runner.config.batch else "") + ".", flush=True)
                outcome = runner.run()
                progress.clear()
                _print_parse_health(pool, run_id)
            except Exception as exc:
                # Ctrl+C can land inside a library that turns it into its own error (duckdb
                # importing pandas says "'pandas' is required"): after a Ctrl+C, any error is the
                # interruption.
                if isinstance(exc, CLIError) or not sigint.seen():
                    raise
                return _interrupted(pool, run_id, progress, resume_command)
            except KeyboardInterrupt:
                return _interrupted(pool, run_id, progress, resume_command)
        if outcome.status == FAILED:
            raise CLIError(f"Run {run_id} failed: {outcome.error}\n{outcome.next_step}")
        counts = pool.counts()
        print(f"{run_headline(run_id, outcome.status, outcome.stop_reason)}; {outcome.rounds_done} round(s), "
              f"{outcome.accepted} accepted in this run. Pool {pool.path}: {counts.seeds} seeds, "
              f"{counts.accepted} generated, {counts.rejected} rejected, {counts.instances} instances.")
        if outcome.status != FINISHED:
            print(outcome.next_step or f"Resume with: {resume_command(run_id)}")
            return 3
    return 0


class _SigintSeen:
    """Tells whether Ctrl+C was pressed while in the block, without taking the signal over:
    Python's own handler (and asyncio's, during a run) still turn it into KeyboardInterrupt.
    The signal module writes each signal's number to a wakeup socket, which `seen()` reads."""

    def __enter__(self) -> "_SigintSeen":
        import signal
        import socket
        import threading

        self._seen, self._previous, self._pair = False, None, None
        if threading.current_thread() is threading.main_thread():
            self._pair = socket.socketpair()
            for end in self._pair:
                end.setblocking(False)
            self._previous = signal.set_wakeup_fd(self._pair[1].fileno(), warn_on_full_buffer=False)
        return self

    def seen(self) -> bool:
        import signal

        if self._pair is not None and not self._seen:
            try:
                self._seen = signal.SIGINT in self._pair[0].recv(256)
            except BlockingIOError:
                pass
        return self._seen or _TERMINATED.is_set()

    def __exit__(self, *exc) -> None:
        import signal

        if self._pair is not None:
            signal.set_wakeup_fd(self._previous if self._previous is not None else -1)
            for end in self._pair:
                end.close()


def _interrupted(pool, run_id: int, progress, resume_command) -> int:
    progress.clear()
    try:
        pool.runs.set_status(run_id, INTERRUPTED, stop_reason="interrupted")
    except BaseException:  # noqa: BLE001 - the message below matters more than the status
        pass
    print(f"Interrupted. Resume with: {resume_command(run_id)}", file=sys.stderr)
    return _interrupt_code()


def _print_parse_health(pool, run_id: int) -> None:
    """Per stage: answers, how many could be read, what they yielded; and advice when a stage fails."""
    from . import monitor

    view = monitor.run_view(pool, run_id)
    if view.run.get("structured_note"):
        print(f"Structured output: {view.run['structured_note']}.")
    if not view.health:
        return
    print("Parse health (answers read / parsed / items / structured):")
    for h in view.health:
        print(f"  {h['stage']:<13} {h['answers']:>6} {h['parsed']:>7} {h['items']:>6} {h['structured']:>11}")
    for hint in view.hints:
        print(f"Hint: {hint}. The raw answers are on the Rejects page.")


def _latest_resumable(pool) -> int | None:
    for run in pool.runs.all():
        if run["status"] in UNFINISHED_STATUSES:
            return run["id"]
    return None


class _Progress:
    """A progress bar on stderr (tqdm, on a terminal only), and a summary line per round on stdout."""

    RATE_LIMIT_EVERY_S = 10.0      # a wait going on is said again at most this often
    PACE_EVERY_S = 5.0             # the run's pace is measured again at most this often
    SLOW_EVERY_S = 120.0           # a slow local model is said again at most this often

    def __init__(self, stream, pool=None) -> None:
        import time

        self.stream = stream
        self.bar = None
        self._waiting_since_said: float | None = None
        self.pool = pool
        self.started = time.monotonic()
        self._pace = None
        self._pace_at = self._slow_said = -1e9

    def note_pace(self, event) -> str:
        """The run's own pace ("12 tokens/s · about 4 min left"), measured at most every
        PACE_EVERY_S; a slow local model is said on stderr in plain words."""
        import time

        from .monitor import run_pace

        now = time.monotonic()
        if self.pool is not None and now - self._pace_at >= self.PACE_EVERY_S:
            self._pace_at = now
            self._pace = run_pace(self.pool, event.run_id, elapsed_s=now - self.started)
            note = self._pace.note()
            if note and now - self._slow_said >= self.SLOW_EVERY_S:
                self._slow_said = now
                self._print(note, file=self.stream)
        return self._pace.words() if self._pace is not None else ""

    def note_rate_limit(self, event) -> None:
        """Say on stderr that requests wait out a 429 ("rate limited: waiting 24 s"): when a wait
        starts, then every RATE_LIMIT_EVERY_S while it goes on."""
        import time

        from .monitor import rate_limit_words

        if event.kind != "rate_limit":
            return
        words = rate_limit_words((event.data or {}).get("rate_limit_wait_s", 0.0))
        if not words:
            self._waiting_since_said = None
            return
        now = time.monotonic()
        if self.bar is not None and not self.bar.disable:
            self.bar.set_postfix_str(words)
        if self._waiting_since_said is None or now - self._waiting_since_said >= self.RATE_LIMIT_EVERY_S:
            self._waiting_since_said = now
            self._print(words, file=self.stream)

    def __call__(self, event) -> None:
        from .monitor import doing_words

        self.note_rate_limit(event)
        if event.kind == "preparing":
            self._print(event.message[:1].upper() + event.message[1:] + " ...", file=self.stream)
        if event.kind in {"request", "round_started"} and event.total:
            bar = self._bar()
            d = event.data
            doing = doing_words(d.get("in_flight_stages") or {})
            bar.set_description(f"round {event.round}" + (f" ({doing})" if doing else ""), refresh=False)
            bar.total = event.total
            bar.n = event.done
            pace = self.note_pace(event) if event.kind == "request" else ""
            bar.set_postfix_str((f"{pace} · " if pace else "") + f"{d.get('in_flight', 0)} in flight of {d.get('limit', 0)}"
                                + (f" · {d['rate_limited']} rate-limited" if d.get("rate_limited") else "")
                                + (f" · {d['failures']} failed" if d.get("failures") else ""))
        elif event.kind == "round_done":
            row = event.data
            self._print(f"round {event.round}: {row['requests']} requests, {row['candidates']} candidates, "
                        f"{row['accepted']} accepted ({row['acceptance']:.0%}), {row['rejected']} rejected, "
                        f"{row['instances']} instances, {row['errors']} errors, {int(row['tokens']):,} tokens, "
                        f"${row['cost_usd']:.4f}, {row['seconds']:.1f} s")
        elif event.kind == "batch":
            self._print(event.message)

    def _bar(self):
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=0, unit="request", file=self.stream, leave=False,
                            disable=not self.stream.isatty(), dynamic_ncols=True)
        return self.bar

    def _print(self, line: str, file=None) -> None:
        if self.bar is not None and not self.bar.disable:
            self.bar.clear()
        print(line, flush=True, file=file)
        if self.bar is not None and not self.bar.disable:
            self.bar.refresh()

    def clear(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# judge's settings that a resumed judge run may change, by argparse name -> JudgeConfig field
_JUDGE_FLAGS = {"model": "model", "base_url": "base_url", "api_key_env": "key_env", "timeout": "timeout_s",
                "max_retries": "max_retries", "concurrency": "concurrency", "threads": "threads",
                "ctx_size": "ctx_size", "structured": "structured", "mode": "mode",
                "rate_limit_patience": "rate_limit_patience_s"}


def cmd_judge(args) -> int:
    from . import judge as judge_mod
    from . import local
    from .backend import LOCAL, defaults_for

    if args.study is None and not args.pool and args.resume is None:
        raise CLIError("Say what to judge: --study ID (a quality study's items), --pool, or --resume.")
    if args.base_url and not args.model and args.resume is None:
        raise CLIError("--base-url needs --model (the model's name at that endpoint).")
    kind = _backend_kind(args)
    given = {field: getattr(args, flag) for flag, field in _JUDGE_FLAGS.items() if getattr(args, flag) is not None}
    if args.price:
        given["price_per_m"] = list(args.price)
    if kind == LOCAL and args.gguf is not None:
        given["gguf"] = _gguf_setting(args)
        given.setdefault("model", local.model_name(given["gguf"]))
    with open_pool(args) as pool:
        interrupted = pool.judge.mark_interrupted()
        overrides: dict = {}
        if args.resume is not None:
            runs = judge_mod.resumable_judge_runs(pool)
            judge_run_id = args.resume or (runs[0]["id"] if runs else None)
            run = pool.judge.run(judge_run_id) if judge_run_id else None
            if run is None:
                raise CLIError("There is no judge run to resume (none is interrupted, paused, failed or stopped)."
                               if not args.resume else f"There is no judge run {args.resume}.")
            progress = pool.judge.progress(judge_run_id)
            if run["status"] == FINISHED and not progress["pending"]:
                print(f"Judge run {judge_run_id} had finished: all {progress['total']} items are judged.")
                _print_judge_summary(pool, judge_run_id)
                return 0
            overrides = _resume_overrides(args, kind, run["config"], given)
            if overrides:
                print("Changed for this judge run: " + ", ".join(f"{k}={v}" for k, v in sorted(overrides.items())))
        else:
            if interrupted:
                print(f"Judge run(s) {', '.join(map(str, interrupted))} had been interrupted; resume with --resume.")
            kind = kind or LOCAL
            defaults = defaults_for(kind)
            config = judge_mod.JudgeConfig(**{
                "model": local.model_name(None) if kind == LOCAL else "selfinstruct-demo", "base_url": "",
                "backend": kind, "mode": defaults["mode"], "concurrency": defaults["concurrency"],
                "timeout_s": defaults["timeout_s"], **given})
            scope = judge_mod.SCOPE_STUDY if args.study is not None else judge_mod.SCOPE_POOL
            try:
                estimate = judge_mod.estimate_judge(pool, config, scope, args.study, args.limit)
                print(f"Estimate: {estimate.items:,} item(s), ~{estimate.tokens:,} tokens, "
                      f"~${estimate.cost_usd:.2f} ({estimate.basis}).")
                judge_run_id = judge_mod.start_judge(pool, config, scope, args.study, args.limit, name=args.name,
                                                     actor="cli")
            except ValueError as exc:
                raise CLIError(str(exc)) from None
        progress = _JudgeProgress(sys.stderr)
        with _SigintSeen() as sigint:
            try:
                try:
                    runner = judge_mod.JudgeRunner(pool, judge_run_id, on_event=progress, overrides=overrides,
                                                   actor="cli", env_key_any_url=True)   # the user's own key
                except ValueError as exc:
                    raise CLIError(str(exc)) from None
                total = pool.judge.progress(judge_run_id)
                print(f"Judge run {judge_run_id}: {total['pending']} of {total['total']} item(s) to judge with "
                      f"{runner.config.model} at {runner.backend.description}.", flush=True)
                outcome = runner.run()
                progress.clear()
            except Exception as exc:
                if isinstance(exc, CLIError) or not sigint.seen():
                    raise
                return _judge_interrupted(pool, judge_run_id, progress)
            except KeyboardInterrupt:
                return _judge_interrupted(pool, judge_run_id, progress)
        note = (pool.judge.run(judge_run_id) or {}).get("structured_note")
        if note:
            print(f"Structured output: {note}.")
        if outcome.status == FAILED:
            raise CLIError(f"Judge run {judge_run_id} failed: {outcome.error}\n{outcome.next_step}")
        print(f"Judge run {judge_run_id} {outcome.status}: {outcome.done}/{outcome.total} items judged, "
              f"{outcome.unparseable} unreadable, ${outcome.cost_usd:.4f} (pool {pool.path}).")
        _print_judge_summary(pool, judge_run_id)
        if outcome.status != FINISHED:
            print(outcome.next_step or f"Resume with: {judge_mod.resume_judge_command(judge_run_id)}")
            return 3
    return 0


def _judge_interrupted(pool, judge_run_id: int, progress) -> int:
    from .judge import resume_judge_command

    progress.clear()
    try:
        pool.judge.set_status(judge_run_id, INTERRUPTED, stop_reason="interrupted")
    except BaseException:  # noqa: BLE001 - the message below matters more than the status
        pass
    print(f"Interrupted. Resume with: {resume_judge_command(judge_run_id)}", file=sys.stderr)
    return _interrupt_code()


def _print_judge_summary(pool, judge_run_id: int) -> None:
    """The judge's yes-rate per question and, for a labeled study, its agreement with people."""
    from .judge import answer_rates, calibrate_run
    from .model import QUESTIONS
    from .quality import MEASURE_LABELS

    rates = answer_rates(pool, judge_run_id)
    words = {q: MEASURE_LABELS[q].lower() for q in QUESTIONS}
    if rates[QUESTIONS[0]]["n"]:
        print("The judge's answers (readable verdicts):")
        for q in QUESTIONS:
            r = rates[q]
            print(f"  {words[q]:<18} {r['yes_rate']:>4.0%} yes ({r['yes']} of {r['n']}; {r['no']} no, "
                  f"{r['unsure']} unsure)")
    calibrated = calibrate_run(pool, judge_run_id)
    if calibrated:
        print("Against people's majority answer (labeled items; split, unsure or unjudged ones left out):")
        for q, cal in calibrated.items():
            k = cal.kappa
            kappa = (f"kappa {k.value:.2f} [{k.low:.2f}, {k.high:.2f}]" if k.value is not None
                     else f"kappa n/a ({k.why_undefined})")
            found = (f"; finds {cal.recall.hits} of {cal.recall.n} 'no'" if cal.recall.n else "")
            left = ", ".join(f"{n} {why}" for why, n in cal.left_out.items() if n) or "none"
            print(f"  {words[q]:<18} {kappa} on {cal.items} item(s){found}; left out: {left}")
    _print_pool_rates(pool, judge_run_id)


def _print_pool_rates(pool, judge_run_id: int) -> None:
    """A pool run: pool-wide rates with the newest labeled study, or the one sentence saying why not."""
    from .judge import SCOPE_POOL, pool_rates
    from .quality import MEASURE_LABELS

    run = pool.judge.run(judge_run_id)
    labeled = [s for s in pool.quality.studies() if s["labeled_items"]]
    if run is None or run["scope"] != SCOPE_POOL or not labeled:
        return
    study = labeled[0]
    try:
        rates = pool_rates(pool, judge_run_id, study["id"])
    except ValueError as exc:
        print(str(exc))
        return
    first = next(iter(rates.values()))
    print(f"Pool-wide rates with study {study['id']} ({first.n_human} labeled items, {first.n_judge:,} other judged "
          f"items, {first.unreadable} unreadable verdicts kept as a cell of their own), 95% intervals:")
    for q, r in rates.items():
        print(f"  {MEASURE_LABELS.get(q, q).lower():<18} {r.estimate:>4.0%} [{r.low:.0%}, {r.high:.0%}]; "
              f"people only {r.human_estimate:.0%} [{r.human_low:.0%}, {r.human_high:.0%}]")


class _JudgeProgress:
    """The judge's progress bar on stderr (tqdm, on a terminal only), like generate's."""

    def __init__(self, stream) -> None:
        self.base = _Progress(stream)

    def __call__(self, event) -> None:
        self.base.note_rate_limit(event)
        if event.kind in {"judge_started", "judge_progress"} and event.total:
            bar = self.base._bar()
            d = event.data
            bar.unit = "item"
            bar.set_description("judging", refresh=False)
            bar.total, bar.n = event.total, event.done
            bar.set_postfix_str(f"{d.get('in_flight', 0)} in flight · ${d.get('cost_usd', 0.0):.4f}"
                                + (f" · {d['unparseable']} unreadable" if d.get("unparseable") else "")
                                + (f" · {d['failures']} failed" if d.get("failures") else ""))

    def clear(self) -> None:
        self.base.clear()


EVALUATE_EPILOG = """a first evaluation, step by step:
  selfinstruct evaluate create --name demo --instructions user_oriented_instructions.jsonl --limit 20 \\
      --model offline:offline-base --model offline:offline-tuned
      store an evaluation of two models on the first 20 instructions of the paper's file
      (offline:NAME is a stand-in that answers instantly; its answers get better or worse with NAME)
  selfinstruct evaluate collect 1
      collect every model's answer (Ctrl+C keeps what came in; run it again to go on)
  selfinstruct evaluate prerate 1 --offline
      let a judge model rate each answer A-D first (kept apart from people's ratings)
  streamlit run app.py   (the Evaluate page)
      people rate the answers blind: one instruction at a time, its answers in random order
  selfinstruct evaluate results 1
      the share of A / B / C / D per model with 95% intervals, and how far the raters agree

models (--model, two or more, in any order):
  offline:NAME                       the offline stand-in (not a language model)
  local  or  local:FILE.gguf         a GGUF model on this machine through llama.cpp
  URL:MODEL                          an OpenAI-compatible endpoint, e.g.
                                     https://api.openai.com/v1:gpt-4o-mini or
                                     http://localhost:8000/v1:my-tuned-model
The key of an endpoint comes from $OPENAI_API_KEY (or --api-key-env) and is never stored.

instructions: --instructions FILE (JSON lines or JSON: Self-Instruct seed tasks, the paper's 252
user-oriented instructions, Alpaca records; or CSV with instruction and input columns) or
--holdout K (a seeded random sample of K accepted tasks of the pool).

Levels (the paper's): A valid and satisfying; B acceptable with minor flaws; C responds to the
instruction but has significant errors; D irrelevant or invalid. collect and prerate exit 2 when
they fail (with what to do next) and 130 on Ctrl+C."""


def _add_evaluate_parser(sub, db) -> None:
    ev = sub.add_parser(
        "evaluate", parents=[db], help="compare models the paper's way: their answers rated A-D, blind",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EVALUATE_EPILOG,
        description="The paper's evaluation of models: two or more models answer the same instructions, "
                    "people rate every answer blind on four levels (A-D) on the Evaluate page, and the "
                    "results are the share of each level per model.")
    ev_sub = ev.add_subparsers(dest="evaluate_command", required=True, metavar="ACTION")
    cr = ev_sub.add_parser("create", parents=[db], help="store an evaluation: its models and instructions")
    cr.add_argument("--name", help="a name for the evaluation")
    src = cr.add_mutually_exclusive_group(required=True)
    src.add_argument("--instructions", type=Path, metavar="FILE", help="the instructions to answer (see below)")
    src.add_argument("--holdout", type=int, metavar="K", help="hold out K accepted tasks of the pool, at random")
    cr.add_argument("--limit", type=int, metavar="N", help="--instructions: only the first N")
    cr.add_argument("--seed", type=int, default=0, help="--holdout: the sample's seed (default 0)")
    cr.add_argument("--model", action="append", required=True, metavar="SPEC",
                    help="a model to evaluate (two or more): offline:NAME, local[:FILE.gguf] or URL:MODEL")
    cr.add_argument("--label", action="append", metavar="NAME",
                    help="the name results show for each --model, in the same order (default: the model name)")
    cr.add_argument("--mode", choices=("chat", "completion"),
                    help="chat completions or the completions endpoint, for every model (default: chat; "
                         "completion for the local model)")
    cr.add_argument("--concurrency", type=int, help="requests in flight per model (default 8; 2 locally)")
    cr.add_argument("--timeout", type=float, metavar="SECONDS", help="deadline for each request attempt")
    cr.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the endpoints' key")
    _add_patience(cr)
    cr.set_defaults(func=cmd_evaluate_create)

    co = ev_sub.add_parser("collect", parents=[db], help="collect the models' answers (resumes by itself)")
    co.add_argument("evaluation_id", type=int)
    co.add_argument("--resume", action="store_true",
                    help="go on after an interruption (collect always sends only the answers still missing)")
    co.set_defaults(func=cmd_evaluate_collect)

    pr = ev_sub.add_parser("prerate", parents=[db], help="let a judge model rate the answers A-D (apart from people)")
    pr.add_argument("evaluation_id", type=int)
    backend = pr.add_mutually_exclusive_group()
    backend.add_argument("--offline", action="store_true", help="the offline judge (a stand-in, not a model)")
    backend.add_argument("--local", action="store_true", help="the bundled local model through llama.cpp")
    backend.add_argument("--base-url", help="an OpenAI-compatible endpoint (needs --model)")
    backend.add_argument("--resume", action="store_true", help="go on with the judge already set")
    pr.add_argument("--model", help="model name at the endpoint")
    pr.add_argument("--mode", choices=("chat", "completion"))
    pr.add_argument("--structured", choices=("auto", "on", "off"), help="chat mode: ask for a JSON rating")
    pr.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the key (never stored)")
    pr.add_argument("--price", type=float, nargs=2, metavar=("INPUT", "OUTPUT"), help="USD per 1M tokens")
    _add_patience(pr)
    pr.set_defaults(func=cmd_evaluate_prerate)

    rs = ev_sub.add_parser("results", parents=[db], help="each model's share of A-D, intervals, agreement")
    rs.add_argument("evaluation_id", type=int)
    rs.add_argument("--json", action="store_true", help="print one JSON object")
    rs.set_defaults(func=cmd_evaluate_results)

    ls = ev_sub.add_parser("list", parents=[db], help="the evaluations in the pool")
    ls.set_defaults(func=cmd_evaluate_list)


def cmd_evaluate_create(args) -> int:
    from . import evaluate

    labels = args.label or []
    if len(labels) > len(args.model):
        raise CLIError("Give at most one --label per --model.")
    settings = {"mode": args.mode, "concurrency": args.concurrency, "timeout_s": args.timeout,
                "key_env": args.api_key_env, "rate_limit_patience_s": args.rate_limit_patience}
    try:
        models = [evaluate.model_from_spec(spec, **settings) for spec in args.model]
        for model, label in zip(models, labels):
            model.label = label
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    with open_pool(args) as pool:
        try:
            if args.instructions is not None:
                instructions = evaluate.read_instruction_file(args.instructions, limit=args.limit)
            else:
                instructions = evaluate.holdout_instructions(pool, args.holdout, seed=args.seed)
            evaluation_id = evaluate.create_evaluation(pool, models, instructions, name=args.name, actor="cli")
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        estimate = evaluate.estimate_collection(pool, evaluation_id)
    print(f"Evaluation {evaluation_id}: {len(instructions)} instruction(s) x {len(models)} models "
          f"({', '.join(m.name for m in models)}).")
    print(f"Estimate: {estimate.answers:,} answer(s), ~{estimate.tokens:,} tokens, ~${estimate.cost_usd:.2f} "
          f"({estimate.basis}).")
    print(f"Next: {evaluate.collect_command(evaluation_id)}")
    return 0


class _EvalProgress:
    def __init__(self, stream, what: str) -> None:
        self.base, self.what = _Progress(stream), what

    def __call__(self, event) -> None:
        self.base.note_rate_limit(event)
        if event.kind in {"eval_started", "eval_progress"} and event.total:
            bar = self.base._bar()
            d = event.data
            bar.unit = "answer"
            bar.set_description(self.what, refresh=False)
            bar.total, bar.n = event.total, event.done
            bar.set_postfix_str(f"{d.get('in_flight', 0)} in flight · ${d.get('cost_usd', 0.0):.4f}"
                                + (f" · {d['failures']} failed" if d.get("failures") else ""))

    def clear(self) -> None:
        self.base.clear()


def _run_evaluation(pool, evaluation_id: int, task: str) -> int:
    from . import evaluate

    progress = _EvalProgress(sys.stderr, "answering" if task == evaluate.COLLECT else "pre-rating")
    command = (evaluate.collect_command(evaluation_id) if task == evaluate.COLLECT
               else evaluate.prerate_command(evaluation_id))
    with _SigintSeen() as sigint:
        try:
            runner = evaluate.EvalRunner(pool, evaluation_id, on_event=progress, task=task,
                                         env_key_any_url=True)   # the user's own key
            outcome = runner.run()
            progress.clear()
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        except Exception as exc:
            if isinstance(exc, CLIError) or not sigint.seen():
                raise
            return _evaluation_interrupted(pool, evaluation_id, task, progress, command)
        except KeyboardInterrupt:
            return _evaluation_interrupted(pool, evaluation_id, task, progress, command)
    if outcome.status == FAILED:
        raise CLIError(f"Evaluation {evaluation_id} failed: {outcome.error}\n{outcome.next_step}")
    what = "answers" if task == evaluate.COLLECT else "pre-ratings"
    print(f"Evaluation {evaluation_id} {outcome.status}: {outcome.done}/{outcome.total} {what}, "
          f"${outcome.cost_usd:.4f}" + (f", {outcome.unparseable} unreadable" if outcome.unparseable else "") + ".")
    if outcome.status != FINISHED:
        print(outcome.next_step or f"Resume with: {command}")
        return 3
    return 0


def _evaluation_interrupted(pool, evaluation_id: int, task: str, progress, command: str) -> int:
    from .evaluate import PRERATE

    progress.clear()
    try:
        pool.evaluations.set_status(evaluation_id, INTERRUPTED, stop_reason="interrupted", judge=task == PRERATE)
    except BaseException:  # noqa: BLE001 - the message below matters more than the status
        pass
    print(f"Interrupted. Resume with: {command}", file=sys.stderr)
    return _interrupt_code()


def cmd_evaluate_collect(args) -> int:
    from . import evaluate

    with open_pool(args) as pool:
        pool.evaluations.mark_interrupted()
        evaluation = pool.evaluations.get(args.evaluation_id)
        if evaluation is None:
            raise CLIError(f"There is no evaluation {args.evaluation_id}.")
        progress = pool.evaluations.progress(args.evaluation_id)
        if not progress["pending"]:
            print(f"Evaluation {args.evaluation_id} has all {progress['total']} answers.")
            return 0
        names = ", ".join(m.name for m in evaluate.models_of(pool, args.evaluation_id))
        print(f"Evaluation {args.evaluation_id}: {progress['pending']} of {progress['total']} answer(s) to "
              f"collect from {names}.", flush=True)
        code = _run_evaluation(pool, args.evaluation_id, evaluate.COLLECT)
        if code == 0:
            print(f"Next: rate the answers on the Evaluate page, or let a judge pre-rate them: "
                  f"selfinstruct evaluate prerate {args.evaluation_id} --offline")
        return code


def cmd_evaluate_prerate(args) -> int:
    from . import evaluate, local
    from .backend import LOCAL, OFFLINE, OPENAI_COMPATIBLE, defaults_for
    from .judge import JudgeConfig

    with open_pool(args) as pool:
        pool.evaluations.mark_interrupted()
        evaluation = pool.evaluations.get(args.evaluation_id)
        if evaluation is None:
            raise CLIError(f"There is no evaluation {args.evaluation_id}.")
        if args.resume:
            if not evaluation["judge_config"]:
                raise CLIError("No judge was set for this evaluation: name one (--offline, --local or --base-url).")
        else:
            if args.base_url and not args.model:
                raise CLIError("--base-url needs --model (the model's name at that endpoint).")
            kind = OPENAI_COMPATIBLE if args.base_url else OFFLINE if args.offline else LOCAL
            defaults = defaults_for(kind)
            given = {"mode": args.mode, "structured": args.structured, "key_env": args.api_key_env,
                     "rate_limit_patience_s": args.rate_limit_patience}
            config = JudgeConfig(**{
                "backend": kind, "base_url": args.base_url or "", "mode": defaults["mode"],
                "concurrency": defaults["concurrency"], "timeout_s": defaults["timeout_s"],
                "model": args.model or (local.model_name(None) if kind == LOCAL else "selfinstruct-demo"),
                **{k: v for k, v in given.items() if v is not None}})
            if args.price:
                config.price_per_m = list(args.price)
            try:
                planned = evaluate.plan_prerating(pool, args.evaluation_id, config, actor="cli")
            except ValueError as exc:
                raise CLIError(str(exc)) from None
            print(f"Judge {config.model}: {planned} answer(s) to pre-rate.", flush=True)
        return _run_evaluation(pool, args.evaluation_id, evaluate.PRERATE)


def _pct(share) -> str:
    if share.share is None:
        return "-"
    return f"{share.share:.0%} [{share.low:.0%}, {share.high:.0%}]"


def cmd_evaluate_results(args) -> int:
    from dataclasses import asdict

    from . import evaluate

    with open_pool(args) as pool:
        try:
            res = evaluate.results(pool, args.evaluation_id)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        progress = pool.evaluations.progress(args.evaluation_id)
    if args.json:
        print(json.dumps(asdict(res), default=str))
        return 0
    print(f"Evaluation {args.evaluation_id}: {progress['answered']}/{progress['total']} answers, "
          f"${progress['cost_usd']:.4f}; rated by {len(res.raters)} person(s).")
    print("People's rating per answer is the median of its ratings (the worse middle one on a tie).")
    for title, rows in (("People", res.models), (f"Judge {res.judge_model} (not counted above)", res.judge_models)):
        if not rows:
            continue
        print(f"{title}:")
        for m in rows:
            levels = "  ".join(f"{level} {m.levels[level].count}" for level in evaluate.LEVELS)
            print(f"  {m.name:<24} {m.rated:>4} rated  {levels}   A or B {_pct(m.acceptable)}")
    if res.agreement is not None:
        a = res.agreement
        print(f"Agreement between raters: {a.method} "
              + (f"{a.value:.2f}" if a.value is not None else f"n/a ({a.why_undefined})") + f" on {a.items} answer(s).")
    if res.judge_agreement is not None:
        a = res.judge_agreement
        print(f"Judge against people: {a.method} " + (f"{a.value:.2f}" if a.value is not None else "n/a")
              + f"; same level on {_pct(res.judge_exact)} of {a.items} answer(s).")
    return 0


def cmd_evaluate_list(args) -> int:
    with open_pool(args) as pool:
        rows = pool.evaluations.all()
    if not rows:
        print("No evaluation yet: selfinstruct evaluate create --help")
    for e in rows:
        names = ", ".join(m.get("label") or m.get("model") for m in e["config"].get("models", []))
        print(f"{e['id']:>4}  {e['name'] or '-':<20} {e['status']:<12} {e['answered']}/{e['answers']} answers  {names}")
    return 0


def cmd_batch_write(args) -> int:
    from . import batch

    with open_pool(args) as pool:
        try:
            written = batch.write_batch_file(pool, args.run_id, args.out)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    if not written:
        print(f"Run {args.run_id} has no request ready to send (nothing written).")
        return 0
    print(f"Wrote {written} request(s) of run {args.run_id} to {args.out}.\n"
          f"Run them with: vllm run-batch -i {args.out} -o answers.jsonl --model <model>\n"
          f"then: selfinstruct batch read answers.jsonl")
    return 0


def cmd_batch_read(args) -> int:
    from . import batch

    if not args.file.exists():
        raise CLIError(f"No such file: {args.file}")
    with open_pool(args) as pool:
        try:
            report = batch.read_batch_file(pool, args.file, run_id=args.run_id)
        except (ValueError, batch.RunFailed) as exc:
            raise CLIError(str(exc)) from None
    print(f"Run {report.run_id}: {report.answered} answer(s) applied, {report.failed} failed line(s) "
          f"will be sent again, {report.ignored} line(s) ignored. {report.ready} request(s) are ready "
          f"for the next batch" + (f"; the run is {report.status}." if report.status else "."))
    return 0


def cmd_offline_server(args) -> int:
    from .offline import STRUCTURED_OUTPUT_CHOICES, serve_forever

    serve_forever(port=args.port, host=args.host, api_key=args.api_key, latency_s=args.latency,
                  seed=args.seed, structured_output=STRUCTURED_OUTPUT_CHOICES[args.structured_output],
                  judge_error=args.judge_error, judge_seed=args.judge_seed)
    return 0


def cmd_refilter(args) -> int:
    from .pipeline import refilter

    keywords = [k.strip() for k in args.keywords.split(",") if k.strip()] if args.keywords else None
    with open_pool(args) as pool:
        try:
            report = refilter(pool, args.run_id, threshold=args.threshold, keywords=keywords,
                              cosine=args.cosine, apply=args.apply, actor="cli")
        except ValueError as exc:   # no such run, or a parser version this code does not have
            raise CLIError(str(exc)) from None
    print(f"Run {report.run_id} of {pool.path}: {report.candidates} candidates, {len(report.changed)} would change.")
    keys = sorted(set(report.before) | set(report.after))
    for key in keys:
        print(f"  {key:<26} {report.before.get(key, 0):>7} -> {report.after.get(key, 0):>7}")
    if args.apply:
        print(f"Applied {report.applied} change(s).")
    return 0


def cmd_export(args) -> int:
    from . import export as export_mod

    if args.format is None and args.preset is None:
        raise CLIError("Give --format (selfinstruct, alpaca, chat, prompt-completion, parquet, csv) or "
                       "--preset (trl, axolotl, llama-factory), which picks one.")
    try:
        fmt = export_mod.resolve_format(args.preset, args.format)
        license = export_mod.check_license(args.license)
        language = export_mod.check_languages(args.language)
        filters = export_mod.ExportFilters(
            include_seeds=not args.no_seeds, include_generated=not args.no_generated,
            runs=export_mod.parse_run_ids(args.run), min_round=args.min_round, max_round=args.max_round,
            classification={"only": True, "exclude": False}.get(args.classification),
            exclude_rescued=args.exclude_rescued, human_approved_only=args.human_approved_only,
            exclude_invalid=args.exclude_invalid,
            min_instruction_words=args.min_instruction_words,
            max_instruction_words=args.max_instruction_words,
            min_output_words=args.min_output_words, max_output_words=args.max_output_words,
            include_empty_tasks=args.include_empty_tasks,
            judge_run_id=args.judge_run, judge_exclude=args.judge_drop or (),
        ).for_format(fmt)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    options = export_mod.ExportOptions(system_prompt=args.system_prompt or None,
                                       template_seed=args.template_seed)
    with open_pool(args) as pool:
        if args.max_per_topic is not None:
            from . import embed, topics

            try:
                filters = topics.capped(pool, filters, args.max_per_topic)
            except (ValueError, embed.EmbedderUnavailable) as exc:
                raise CLIError(str(exc)) from None
        if filters.judge_run_id is not None and pool.judge.run(filters.judge_run_id) is None:
            raise CLIError(f"There is no judge run {filters.judge_run_id} in {pool.path} "
                           "(the Judge page lists them; selfinstruct judge --pool starts one).")
        counts = pool.explore.export_counts(filters)
        for line in filters.describe():
            print(f"  {line}")
        empty = counts["empty_tasks"]
        print(f"{counts['tasks']:,} task(s) ({counts['seed_tasks']:,} seed, {counts['generated_tasks']:,} "
              f"generated) with {counts['instances']:,} instance(s)"
              + (f"; {empty:,} task(s) with no instance left "
                 + ("are written with no instances" if filters.include_empty_tasks else "are skipped")
                 if empty else "") + ".")
        if args.dry_run:
            return 0
        checked_name(args.out)
        try:
            result = export_mod.export_dataset(pool, fmt, args.out, filters, options,
                                               card=not args.no_card, title=args.title, preset=args.preset,
                                               license=license, language=language)
        except (export_mod.ExportNameTaken, export_mod.PresetError) as exc:
            raise CLIError(str(exc)) from None
    print(f"Wrote {result.records:,} {export_mod.FORMAT_INFO[fmt].label} record(s) from {pool.path} to "
          f"{result.path} ({result.bytes / 1e6:.2f} MB) in {result.seconds:.1f} s.")
    if result.files:
        print(f"  archive: {', '.join(result.files)}")
    if result.card_path:
        print(f"  dataset card: {result.card_path}"
              + (f" (charts in {result.chart_paths[0].parent})" if result.chart_paths else ""))
    for path in result.config_paths:
        print(f"  {export_mod.PRESETS[args.preset].label} config: {path}")
    if args.preset == "trl":
        print("  TRL: " + ("the card's \"Training with TRL\" section says how to load it" if not args.no_card
                          else "load it with datasets.load_dataset(\"json\", data_files=...) and pass it "
                               "to SFTTrainer"))
    if fmt == "csv":
        print("  CSV: a cell a spreadsheet would run as a formula starts with an added ' and NUL is "
              "written as U+FFFD" + ("; the card says more." if result.card_path else "."))
    return 0

def main(argv: list[str] | None = None) -> int:
    _survive_file_size_limit()
    _terminate_like_ctrl_c()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except seeds_mod.SeedImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (CLIError, PoolError, ActionError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return _interrupt_code()
    except Exception as exc:
        damaged = damage_error(exc, getattr(args, "db", None) or default_db_path())
        if damaged is None:
            raise
        print(f"error: {damaged}", file=sys.stderr)
        return 2


_TERMINATED = threading.Event()   # SIGTERM arrived: the command ends as after Ctrl+C, with 143


def _interrupt_code() -> int:
    """The exit code of an interrupted command: 128 + the signal's number, as a shell reports it."""
    return 143 if _TERMINATED.is_set() else 130


def _terminate_like_ctrl_c() -> None:
    """SIGTERM (systemd, Docker, CI, `kill`) takes Ctrl+C's path: answers that arrived are stored,
    the run is left interrupted and the resume command printed, instead of a silent exit that
    leaves the run marked running."""
    import signal

    def on_term(signum, frame) -> None:
        _TERMINATED.set()
        handler = signal.getsignal(signal.SIGINT)   # Python's, or asyncio's while a run goes on
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)


def _survive_file_size_limit() -> None:
    """A write past a file-size limit (RLIMIT_FSIZE) should fail with an error we can report,
    not kill the process with SIGXFSZ."""
    import signal
    import threading

    if hasattr(signal, "SIGXFSZ") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
