"""The README and docs/ stay true: short front door, links that resolve, no development
history, every config key documented with its default, and every shell command they show
exercised: run as shown in a sandbox (training shortened to one epoch, tuning to two
trials), or, where it needs the network, a server or a system package, parsed by the real
command line so that a misspelt command or option fails here."""

from __future__ import annotations

import io
import re
import shlex
import shutil
import subprocess
import sys
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import dataset_arrays, write_dataset
from mnist_bp.cli import main
from mnist_bp.config import Config, packaged_config_dir

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
FORBIDDEN = re.compile(r"shared/|this machine|issue [0-9]|sitting", re.I)


def text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


# --- the pages themselves -------------------------------------------------------------------

def test_readme_is_short_and_shows_a_picture():
    lines = text(README).splitlines()
    assert len(lines) <= 350
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text(README))
    assert pictures and all((ROOT / p).is_file() for p in pictures)
    for required in ("docs/results.md", "docs/benchmarks.md", "docs/predict.md",
                     "docs/architecture.md", "docs/reliability.md"):
        assert f"]({required})" in text(README), required


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def test_every_link_resolves():
    bad = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", text(page)):
            if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
                continue
            file_part, _, anchor = target.partition("#")
            dest = (page.parent / file_part).resolve() if file_part else page
            if not dest.exists():
                bad.append(f"{page.name}: {target} (no such file)")
                continue
            if anchor:
                headings = re.findall(r"^#+ (.+)$", text(dest), re.M)
                if anchor not in {slug(h) for h in headings}:
                    bad.append(f"{page.name}: {target} (no such heading)")
    assert bad == []


def test_no_development_environment_history_or_issue_numbers():
    files = [*PAGES, *sorted((ROOT / "mnist_bp").rglob("*.py")),
             ROOT / "mnist_bp" / "web" / "index.html"]
    hits = [f"{f.relative_to(ROOT)}:{n}: {line.strip()}"
            for f in files for n, line in enumerate(text(f).splitlines(), 1)
            if FORBIDDEN.search(line)]
    assert hits == []


def dotted_keys(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if is_dataclass(hints[f.name]):
            yield from dotted_keys(hints[f.name], key)
        else:
            yield key, f


def test_every_config_key_in_the_reference_with_its_default():
    reference = text(ROOT / "docs" / "config.md")
    for key, f in dotted_keys(Config):
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        row = re.search(rf"^\| `{re.escape(key)}` \| `([^`]*)` \|", reference, re.M)
        assert row, f"docs/config.md lacks a row for {key}"
        assert row.group(1) == str(default).replace("'", ""), key


def test_every_command_and_shipped_config_in_the_readme():
    readme = text(README)
    for name in main.commands:
        assert f"mnist-bp {name}" in readme, name
    for path in packaged_config_dir().glob("*.yaml"):
        assert f"`{path.name}`" in readme, path.name
    assert "make train" in readme and "make test" in readme


# --- the commands they show -----------------------------------------------------------------

def shell_blocks(page: Path) -> list[str]:
    return re.findall(r"^```(?:sh|bash)\n(.*?)^```", text(page), re.M | re.S)


def expand_loops(block: str) -> list[str]:
    """Logical lines of a shell block: continuations joined, `for v in a b; do ...; done`
    unrolled (one command per value and inner command)."""
    joined = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        loop = re.match(r"for (\w+) in ([^;]+); do (.*?);? done$", line)
        if loop is None and line.startswith("for "):
            out.append(line)  # a loop spread over lines: handled below
            continue
        if loop:
            var, values, body = loop.groups()
            for value in values.split():
                out += [c.strip().replace(f"${var}", value) for c in body.split(";")]
        else:
            out.append(line)
    # loops over several lines: "for v in ...; do" ... "done"
    result, i = [], 0
    while i < len(out):
        head = re.match(r"for (\w+) in ([^;]+); do$", out[i])
        if head:
            end = out.index("done", i)
            for value in head.group(2).split():
                result += [c.replace(f"${head.group(1)}", value) for c in out[i + 1:end]]
            i = end + 1
        else:
            result.append(out[i])
            i += 1
    return result


def documented_commands() -> list[tuple[str, str]]:
    """(page name, command line) for every command in a shell block of README and docs/."""
    return [(page.name, line) for page in PAGES for block in shell_blocks(page)
            for line in expand_loops(block)]


ALL = documented_commands()


def mnist_bp_args(line: str) -> tuple[list[str], str | None]:
    """The arguments after `mnist-bp` in a command line, and the file piped in (`cat F |`)."""
    stdin = None
    piped = re.match(r"cat (\S+) \| (.*)$", line)
    if piped:
        stdin, line = piped.groups()
    words = shlex.split(line, comments=True)
    while words and ("=" in words[0] and not words[0].startswith("-")
                     or words[0] == "/usr/bin/time"):
        words.pop(0)  # VAR=value prefixes, /usr/bin/time
    assert words and words[0].endswith("mnist-bp"), line
    return words[1:], stdin


def parse(args: list[str]) -> None:
    """Parse `args` with the real command line (types and options checked, nothing run)."""
    ctx = main.make_context("mnist-bp", list(args))
    name = ctx.protected_args[0] if ctx.protected_args else ctx.args[0]
    rest = (ctx.protected_args + ctx.args)[1:]
    command = main.get_command(ctx, name)
    assert command is not None, f"no command {name!r}"
    command.make_context(name, rest, parent=ctx)


def kind(line: str) -> str:
    words = line.split()
    if "mnist-bp" in line and not line.startswith(("sudo", "make")) and \
            not re.search(r"benchmarks/\S+\.py", line):
        args, _ = mnist_bp_args(line)
        if args[0] == "serve" or (args[0] == "tune" and "postgresql://" in line):
            return "needs a server"
        if args[0] == "download" and "--from" not in args:
            return "needs the network"
        return "run"
    if words[0] == "make":
        return "make"
    if re.fullmatch(r"echo '[^']*' > \S+", line):
        return "writes a file"
    if words[0] == "curl":
        return "needs a server"
    if words[0] == "tensorboard":
        return "viewer"
    if words[0] == "sudo":
        return "system package"
    if words[0] == "git":
        return "version control"
    if re.search(r"benchmarks/\S+\.py", line):
        return "benchmark"
    raise AssertionError(f"a documented command of no known kind: {line}")


def test_documented_commands_are_found():
    kinds = {kind(line) for _, line in ALL}
    assert len(ALL) > 40 and {"run", "needs the network", "needs a server", "make",
                              "benchmark"} <= kinds


@pytest.mark.parametrize("page,line", [c for c in ALL if "mnist-bp" in c[1]
                                       and kind(c[1]) != "benchmark"],
                         ids=lambda v: v if isinstance(v, str) and v.endswith(".md") else "")
def test_every_documented_mnist_bp_command_parses(page, line):
    parse(mnist_bp_args(line)[0])


@pytest.mark.parametrize("line", sorted({c[1] for c in ALL if kind(c[1]) == "make"}))
def test_documented_make_targets_exist(line):
    target = line.split()[1]
    assert re.search(rf"^{re.escape(target)}:", text(ROOT / "Makefile"), re.M), target


@pytest.mark.parametrize("line", sorted({c[1] for c in ALL if kind(c[1]) == "viewer"}))
def test_documented_viewers_are_installed(line):
    """`tensorboard --logdir runs/`: the tracking extra installs it beside mnist-bp."""
    pytest.importorskip("tensorboard")
    assert (Path(sys.executable).parent / line.split()[0]).is_file()


@pytest.mark.parametrize("script", sorted({re.search(r"benchmarks/(\S+\.py)", c[1]).group(1)
                                           for c in ALL if kind(c[1]) == "benchmark"}))
def test_documented_benchmark_scripts_answer_help(script):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--help"],
                          capture_output=True, text=True, timeout=120,
                          cwd=ROOT / "benchmarks")
    assert proc.returncode == 0, proc.stderr[-500:]
    assert "usage:" in proc.stdout


# --- running them in a sandbox --------------------------------------------------------------

def digit_image(path: Path) -> None:
    """A dark 7 on light paper, in the format the suffix names."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (120, 160), (235, 230, 220))
    ImageDraw.Draw(im).line([(25, 30), (95, 30), (50, 135)], fill=(20, 20, 30), width=12)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def prepare_paths(args: list[str], sandbox: Path, trained: Path) -> list[str]:
    """Make what a documented command refers to exist in the sandbox: runs (a copy of a small
    trained run), images, folders of images, a search space, an import folder."""
    out = []
    for arg in args:
        arg = arg.replace("~/", f"{sandbox}/home/")
        arg = arg.replace("/usr/share/datasets/fashion-mnist", f"{sandbox}/import/fashion")
        run = re.match(r"(runs/[^/]+)(/|$)", arg)
        if run and not (sandbox / run.group(1)).exists() and "--run-dir" not in out[-1:]:
            shutil.copytree(trained, sandbox / run.group(1))
        suffix = Path(arg).suffix.lower()
        if suffix in (".png", ".jpg") and not (sandbox / arg).exists() and \
                out[-1:] not in (["--out"],):
            digit_image(sandbox / arg)
        if arg in ("photos/", "pngs/"):
            for i in range(2):
                digit_image(sandbox / arg / f"{i}.png")
        out.append(arg)
    return out


def shortened(args: list[str]) -> list[str]:
    """Training to one epoch of a small network; tuning to two trials of one epoch."""
    args = list(args)
    if args[0] == "train" and "--resume" not in args:
        args += ["--set", "training.epochs=1", "--set", "model.hidden=[16]",
                 "--set", "data.printed=false"]
    if args[0] == "tune":
        args[args.index("--trials") + 1] = "2"
        args += ["--set", "training.epochs=1", "--set", "data.printed=false"]
    return args


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, trained_run):
    box = tmp_path_factory.mktemp("docs")
    shutil.copytree(ROOT / "configs", box / "configs")
    arrays = dataset_arrays(n_train=1600)  # tune's example holds 1,000 out for validation
    for name in ("mnist", "fashion-mnist", "kmnist"):
        write_dataset(box / "data" / name, arrays)
    write_dataset(box / "home" / "Downloads" / "mnist", arrays)
    write_dataset(box / "import" / "fashion", arrays)
    space = re.search(r"```yaml\n(optimizer\.learning_rate.*?)```", text(ROOT / "docs" /
                                                                         "tune.md"), re.S)
    (box / "space.yaml").write_text(space.group(1))
    return box, trained_run


def test_documented_commands_run_in_a_sandbox(sandbox, monkeypatch):
    box, trained = sandbox
    monkeypatch.chdir(box)
    monkeypatch.setenv("HOME", str(box / "home"))
    monkeypatch.setenv("MNIST_BP_DATA_DIR", str(box / "data"))
    monkeypatch.setenv("MNIST_BP_MIRROR", "")
    for line in [line for _, line in ALL if kind(line) == "writes a file"]:
        content, target = re.fullmatch(r"echo '([^']*)' > (\S+)", line).groups()
        (box / target).write_text(content + "\n")
    runnable = [line for _, line in ALL if kind(line) == "run"]
    # training first: later commands read the runs it writes
    runnable.sort(key=lambda line: mnist_bp_args(line)[0][0] not in ("train", "tune"))
    failures = []
    for line in dict.fromkeys(runnable):
        args, stdin = mnist_bp_args(line)
        args = shortened(prepare_paths(args, box, trained))
        if args[0] == "train" and "--run-dir" in args:  # two pages train into one folder:
            shutil.rmtree(box / args[args.index("--run-dir") + 1], ignore_errors=True)
        data = (box / prepare_paths([stdin], box, trained)[0]).read_bytes() if stdin else None
        result = CliRunner().invoke(main, args, input=io.BytesIO(data) if data else None)
        if result.exit_code != 0:
            failures.append(f"{line}\n  -> exit {result.exit_code}: "
                            f"{(result.output or '')[-300:]}{result.exception!r}")
    assert failures == []
    summary = (box / "runs" / "robust" / "summary.json")
    assert summary.is_file()
    assert (box / "tune" / "lr" / "best.yaml").is_file()
    assert np.load(box / "runs" / "robust" / "checkpoints" / "best.npz",
                   allow_pickle=False)["layers.0.W"].shape == (784, 16)


def test_the_limits_table_of_reliability_md_is_the_code_s():
    """docs/reliability.md shows limits.TABLE as it is: every limit, its value, what it
    bounds and why, in the code's order; and every limit the code holds is in the table."""
    from mnist_bp import limits

    page = text(ROOT / "docs" / "reliability.md")
    shown = re.search(r"<!-- limits table: generated from mnist_bp/limits.py -->\n(.*?)\n"
                      r"<!-- end of limits table -->", page, re.S).group(1)
    assert shown == limits.table_markdown()
    names = [n for n in vars(limits) if n.isupper() and n != "TABLE" and n != "MB"]
    assert sorted(names) == sorted(limits.TABLE)
    for name in limits.TABLE:  # and each value is the one the modules use
        assert f"| `{name}` | {limits.shown(name)} |" in shown
    from mnist_bp import checkpoint, config, imageprep, serve
    from mnist_bp.data import idx
    assert (config.MAX_FILE_BYTES, idx.MAX_BYTES, imageprep.MAX_PIXELS, serve.MAX_BODY,
            checkpoint.MAX_TOTAL_BYTES) == (limits.CONFIG_BYTES, limits.IDX_BYTES,
                                            limits.IMAGE_MAX_PIXELS, limits.UPLOAD_BYTES,
                                            limits.CHECKPOINT_TOTAL_BYTES)
