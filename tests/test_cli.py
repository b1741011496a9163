"""`sail`: the top-level help lists every subcommand with the options it really takes, as the README does."""

import re
from pathlib import Path

import pytest

from jobs import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def _usage_lines() -> list[str]:
    """The help's `sail ...` lines (a continuation line joins the one before it)."""
    lines: list[str] = []
    for line in cli.__doc__.splitlines():
        if line.startswith("sail "):
            lines.append(line)
        elif line.startswith(" ") and lines and line.strip().startswith("["):
            lines[-1] += " " + line.strip()
    return lines


def test_help_lists_every_command_once(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[1] for line in _usage_lines()]
    assert sorted(names) == sorted(cli.COMMANDS)
    for name in cli.COMMANDS:
        assert f"\nsail {name} " in out


def test_unknown_command_is_an_error_with_the_help(capsys):
    assert cli.main(["nonsense"]) == 2
    captured = capsys.readouterr()
    assert "unknown command 'nonsense'" in captured.err and "sail train-ranker" in captured.out


def test_readme_cli_block_is_the_help():
    text = README.read_text()
    block = text[text.index("## CLI") :]
    block = block[block.index("```\n") + 4 : block.index("\n```", block.index("```\n") + 4)]
    assert block.splitlines() == [line for line in cli.__doc__.splitlines() if line.startswith(("sail ", "    "))]


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_option_in_the_help_is_one_the_command_takes(name, capsys):
    argv = ["report", "compare", "-h"] if name == "report" else [name, "-h"]
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    options = capsys.readouterr().out
    assert f"usage: sail {' '.join(argv[:-1])}" in options
    line = next(line for line in _usage_lines() if line.split()[1] == name)
    for flag in re.findall(r"--[a-z][a-z0-9-]*", line):
        assert re.search(rf"{flag}\b", options), f"`sail {name}` help names {flag}, which the command does not take"


def _cluster_commands() -> list[tuple[list[str], list[str]]]:
    """(how to ask that command for its options, the --flags the line passes) per command in docs/CLUSTER.md."""
    text = (README.parent / "docs" / "CLUSTER.md").read_text()
    block = text[text.index("```bash\n", text.index("## Stage by stage")) + 8 :]
    block = block[: block.index("\n```")].replace("\\\n", " ")
    out = []
    for line in block.splitlines():
        if not line.strip() or line.startswith("#") or "=" in line.split(" ")[0]:
            continue  # comments and shell variables
        words = line.split()
        if "-m" in words:
            module = words[words.index("-m") + 1]
            rest = words[words.index("-m") + 2 :]
            ask = [module, *rest[:1]] if module == "recsys.cli" else [module]
        else:
            at = next(i for i, w in enumerate(words) if w in ("sail", "scripts/sail_spark.py"))
            ask, rest = ["sail", words[at + 1]], words[at + 2 :]
        out.append((ask, [w for w in rest if w.startswith("--")]))
    return out


def test_cluster_doc_commands_take_the_flags_it_passes(capsys):
    import importlib

    commands = _cluster_commands()
    assert len(commands) == 8  # validate, mine-pairs, torchrun embedding, embed, build-sids, export, samples, ranker
    for ask, flags in commands:
        with pytest.raises(SystemExit) as exc:
            if ask[0] == "sail":
                cli.main([*ask[1:], "-h"])
            else:
                importlib.import_module(ask[0]).main([*ask[1:], "-h"])
        assert exc.value.code == 0
        options = capsys.readouterr().out
        for flag in flags:
            assert re.search(rf"{flag}\b", options), f"docs/CLUSTER.md passes {flag} to {' '.join(ask)}"


def test_fbgemm_import_chatter_is_dropped_and_the_error_still_shows(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    argv = ["train-ranker", "--samples", str(tmp_path), "--out", str(tmp_path / "out"), "--variant", "control"]
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", *argv], cwd=root, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "has no _SUCCESS marker" in proc.stderr
    assert "Successfully loaded" not in proc.stderr


def test_the_chatter_filter_keeps_every_other_record():
    import logging

    def record(path: str, msg: str, level: int = logging.INFO) -> logging.LogRecord:
        return logging.LogRecord("root", level, path, 1, msg, None, None)

    chatter = "/site-packages/fbgemm_gpu/__init__.py"
    assert not cli._not_import_chatter(record(chatter, "Successfully loaded: 'fbgemm_gpu_py.so'"))
    assert cli._not_import_chatter(record(chatter, "Successfully loaded", logging.WARNING))
    assert cli._not_import_chatter(record(chatter, "something else"))
    assert cli._not_import_chatter(record("/work/recsys/train.py", "Successfully loaded: x"))


def test_the_console_keeps_own_lines_and_library_warnings_but_not_library_chatter():
    import logging

    def record(name: str, level: int, msg: str = "m") -> logging.LogRecord:
        return logging.LogRecord(name, level, "/x.py", 1, msg, None, None)

    keep = cli._for_console
    assert keep(record("sail", logging.INFO)) and keep(record("recsys.train", logging.INFO))
    assert keep(record("embedding.trainer", logging.DEBUG))
    assert not keep(record("feast.infra.registry.registry", logging.INFO))
    assert not keep(record("root", logging.INFO, "[TBE=1] SplitTableBatchedEmbeddingBagsCodegen Arguments: {}"))
    assert keep(record("pyspark.sql", logging.WARNING))
    assert not keep(record("torchrec.distributed.planner.stats", logging.INFO))
    assert keep(record("torchrec.distributed.planner.types", logging.WARNING))  # sharding raises none (fixed)
    assert not keep(record("py.warnings", logging.WARNING, "/a.py:1: DeprecationWarning: old API\n  warn("))
    assert not keep(record("py.warnings", logging.WARNING, "/a.py:1: FutureWarning: use DTensor\n  x"))
    assert keep(record("py.warnings", logging.WARNING, "/a.py:1: UserWarning: this matters\n  x"))


def test_a_training_command_prints_its_progress_without_library_chatter(tmp_path):
    """`sail train-ranker` in a fresh process: no library INFO lines, planner warnings or deprecation notices."""
    import subprocess
    import sys

    from recsys.synthetic import write_synthetic_samples

    samples = tmp_path / "samples"
    assert write_synthetic_samples(samples) > 0
    root = Path(__file__).resolve().parents[1]
    argv = ["train-ranker", "--samples", str(samples), "--out", str(tmp_path / "out"), "--variant", "control"]
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.cli", *argv, "--trainer", "torchrec"], cwd=root, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torchrec/control seed 0:" in proc.stdout + proc.stderr
    for chatter in ("Successfully loaded", "planner", "DeprecationWarning", "FutureWarning", "SplitTableBatched"):
        assert chatter not in proc.stderr, chatter


@pytest.mark.parametrize("config", ["smoke", "demo", "movielens", "large"])
def test_train_embedding_with_a_run_config_trains_what_sail_run_trains(config, monkeypatch, tmp_path):
    import embedding.trainer
    from jobs.pipeline import embedding_train_config, load_config

    seen = {}

    def fake_train(cfg, *args, **kwargs):
        seen["cfg"] = cfg
        raise SystemExit(0)

    monkeypatch.setattr(embedding.trainer, "train", fake_train)
    argv = ["train-embedding", "--config", config, "--data", "d", "--pairs", "p", "--out", str(tmp_path)]
    with pytest.raises(SystemExit):
        cli.main(argv)
    assert seen["cfg"] == embedding_train_config(load_config(config, run_dir="."))
    # an option still overrides the config's setting, and without --config the trainer's own defaults apply
    with pytest.raises(SystemExit):
        cli.main([*argv, "--steps", "1,2,3,4"])
    assert seen["cfg"].steps() == {"I": 1, "II": 2, "III": 3, "CRE": 4}
    assert seen["cfg"].model == load_config(config).embedding.model
    with pytest.raises(SystemExit):
        cli.main([*argv, "--hn-catalogue-pool", "123"])
    assert seen["cfg"].hn_catalogue_pool == 123
    with pytest.raises(SystemExit):
        cli.main(["train-embedding", "--data", "d", "--pairs", "p", "--out", str(tmp_path)])
    assert seen["cfg"] == embedding.trainer.TrainConfig()


@pytest.mark.parametrize("config", ["demo", "large"])
def test_eval_retrieval_with_a_run_config_evaluates_what_sail_run_evaluates(config, monkeypatch, tmp_path):
    import embedding.retrieval_eval
    from jobs.pipeline import load_config, retrieval_eval_config

    seen = {}

    def fake_eval(cfg, *args, **kwargs):
        seen["cfg"] = cfg
        raise SystemExit(0)

    monkeypatch.setattr(embedding.retrieval_eval, "run_retrieval_eval", fake_eval)
    argv = ["eval-retrieval", "--config", config, "--data", "d", "--pairs", "p", "--out", str(tmp_path)]
    with pytest.raises(SystemExit):
        cli.main(argv)
    want = retrieval_eval_config(load_config(config, run_dir="."))
    assert seen["cfg"] == want and not want.ablations and want.train.model == "minilm"
    with pytest.raises(SystemExit):
        cli.main([*argv, "--no-minilm", "--no-two-tower", "--max-queries", "7"])
    assert (seen["cfg"].minilm, seen["cfg"].two_tower, seen["cfg"].max_queries) == (False, False, 7)
    with pytest.raises(SystemExit):
        cli.main(["eval-retrieval", "--data", "d", "--pairs", "p", "--out", str(tmp_path)])
    assert seen["cfg"] == embedding.retrieval_eval.EvalConfig()


def test_a_config_without_an_embedding_section_trains_the_validated_real_data_recipe():
    """Your own data with only [data] written trains what the shipped movielens config trains (the recipe picked
    on its validation split), but for that config's data-specific holdout and checkpoint spacing; the trainer's
    library defaults are the test-size tiny model, and everything else is shared with them."""
    import dataclasses

    import embedding.trainer
    from embedding.data import DataConfig
    from jobs.pipeline import RunConfig, embedding_train_config, load_config

    default = embedding_train_config(RunConfig(name="x", run_dir="x"))
    shipped = embedding_train_config(load_config("movielens"))
    assert default == dataclasses.replace(shipped, checkpoint_every=default.checkpoint_every)  # holdout: the run's
    assert (default.model, default.data.content_similarity) == ("minilm", "minilm")
    library = embedding.trainer.TrainConfig()
    recipe = {"model": "minilm", "steps_i": 200, "steps_ii": 50, "steps_iii": 50, "steps_cre": 800}
    recipe |= {"batch_size": 64, "threads": 2, "data": DataConfig(content_similarity="minilm")}
    assert default == dataclasses.replace(library, **recipe)


def test_the_run_config_and_the_ranker_trainer_share_their_defaults(tmp_path):
    from jobs.pipeline import RunConfig, ranker_train_kwargs
    from recsys.train import TrainConfig

    where = {"samples_dir": tmp_path, "out_dir": tmp_path}
    assert TrainConfig(**where, **ranker_train_kwargs(RunConfig(name="x", run_dir="x"))) == TrainConfig(**where)


def test_the_ranker_uses_its_own_sid_levels_or_every_level_of_the_features(tmp_path):
    from jobs.pipeline import load_config, ranker_train_kwargs, ranker_variants_args

    path = tmp_path / "c.yaml"
    path.write_text("name: x\nfeatures: {sid_levels: 3}\nranker: {sid_levels: 1, sail_dropout: 0.2}\n")
    cfg = load_config(str(path))
    assert ranker_train_kwargs(cfg)["sid_levels"] == 1 and ranker_train_kwargs(cfg)["sail_dropout"] == 0.2
    assert ranker_variants_args(cfg, tmp_path, tmp_path).lgbm_kwargs["sid_levels"] == 1
    assert ranker_train_kwargs(load_config("smoke"))["sid_levels"] == 3


def test_build_ranking_data_passes_what_sail_run_sets(monkeypatch, tmp_path, capsys):
    """The by-hand samples command (docs/CLUSTER.md) can build what the ranking_samples stage builds: the train start
    at the cutoff, the Matryoshka prefix and the engine reach `recsys.samples.run`."""
    import datetime as dt

    import recsys.samples as samples
    from recsys.cli import main_build_ranking_data

    seen = []

    def fake_run(cfg):
        seen.append(cfg)
        return samples.SamplesResult(tmp_path / "e", tmp_path / "c", {"train": 1}, dt.date(2025, 3, 20),
                                     dt.date(2025, 3, 23), cfg.train_start, "v", 64)  # fmt: skip

    monkeypatch.setattr(samples, "run", fake_run)
    argv = ["--data", str(tmp_path), "--out", str(tmp_path / "o"), "--item-features", str(tmp_path / "f")]
    main_build_ranking_data([*argv, "--train-start", "2025-03-12", "--embedding-prefix", "64", "--sail-engine", "join"])
    cfg = seen[-1]
    assert (cfg.train_start, cfg.embedding_prefix, cfg.sail_engine) == (dt.date(2025, 3, 12), 64, "join")
    assert '"train_start": "2025-03-12"' in capsys.readouterr().out
    main_build_ranking_data(argv)
    assert (seen[-1].train_start, seen[-1].embedding_prefix, seen[-1].sail_engine) == (None, None, "lookup")
