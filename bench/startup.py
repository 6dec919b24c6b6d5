"""Start-up latency of the `ragchat` command: `--help`, and `ragchat chat` until its prompt
accepts input, side by side with a bare interpreter start.

    python bench/startup.py                        # 10× --help, 5× chat, 3× first answer
    python bench/startup.py --chat-repeats 2 --answer-repeats 0
    python bench/startup.py --json /tmp/startup.json
    python bench/startup.py --commands-only             # just the one-shot commands

Also, from process start to exit (subprocess wall time, medians over --command-repeats),
over the same small index: `ragchat ingest` of the already indexed sample (a no-op),
`ragchat search QUESTION`, `ragchat ask QUESTION` (loads the model: the embedder and the
model load side by side), and `ragchat ask --model no-such-model` (an argument error,
which must fail before anything heavy loads). Whether each imported torch is read from
`python -X importtime` on one extra run.

Prints, in one run (medians over the repeats):
  1. `python -c pass` and `ragchat --help` wall time (subprocess, `python -m ragchat`);
  2. `ragchat chat --index bench` in a pseudo-terminal, over an index of
     docs/sample/gull-point.pdf made beforehand in a temporary RAGCHAT_INDEX_DIR:
     - prompt: until the `> ` prompt is on the terminal (after the banner); from then on
       keys are read, while the embedder and the model still load in the background;
     - model ready: until the bottom toolbar says `model NAME (ready)` (the toolbar
       redraws every 0.5 s, so this is late by up to 0.5 s);
     - exit: from Ctrl-D (sent once the model is ready) until the process has exited;
  3. first answer: a question typed as soon as the prompt shows; time until the answer's
     timing line (`… tok/s`) is printed, i.e. the whole answer is on screen, plus what
     that line says about the wait for the model and the first token.

The model cache is RAGCHAT_CACHE_DIR (or --cache-dir; default /tmp/rc-cache). The chat
appends the typed question to the cache's chat-history file, as any chat session does.
The terminal answers prompt_toolkit's cursor-position requests the way a real one does.
"""

from __future__ import annotations

import argparse
import codecs
import fcntl
import json
import os
import re
import select
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SAMPLE = REPO / "docs" / "sample" / "gull-point.pdf"
INDEX = "bench"
QUESTION = "When was the Gull Point light automated?"
ROWS, COLS = 40, 120

# CSI sequences, OSC strings, charset selection and keypad modes: what prompt_toolkit writes
# around its text.
ANSI = re.compile(
    r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]"
)
CPR_REQUEST = "\x1b[6n"
BANNER_END = "Ctrl-D quits."
# prompt_toolkit draws the bold ">" and moves the cursor over the space instead of writing it.
PROMPT = re.compile(r"(^|[\r\n])>")
TIMING = re.compile(r"total [\d.]+s · \d+ tokens at [\d.]+ tok/s")


def default_cache_dir() -> Path:
    return Path(os.environ.get("RAGCHAT_CACHE_DIR") or "/tmp/rc-cache")


def ragchat_command() -> list[str]:
    """`python -m ragchat`: the code on this interpreter's path (a venv's `ragchat` script
    may have been generated for another checkout's layout)."""
    return [sys.executable, "-m", "ragchat"]


def wall(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-500:]!r}")
    return elapsed


class Screen:
    """Just enough of a VT100 to follow prompt_toolkit: it redraws only the characters that
    changed (the toolbar's "(loading 9s)" becomes "(ready)" by rewriting a few cells), so
    what the screen says can't be read from the byte stream alone."""

    CSI = re.compile(
        r"\x1b\[([0-9;?<>=]*)[ -/]*([@-~])"
        r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]"
    )

    def __init__(self, rows: int, cols: int) -> None:
        self.rows, self.cols = rows, cols
        self.lines = [[" "] * cols for _ in range(rows)]
        self.row = self.col = 0

    def feed(self, text: str) -> None:
        pos = 0
        for m in self.CSI.finditer(text):
            self._chars(text[pos : m.start()])
            pos = m.end()
            if m.group(2) is not None and not m.group(1).startswith("?"):
                self._csi(m.group(1), m.group(2))
        self._chars(text[pos:])

    def _csi(self, params: str, final: str) -> None:
        nums = [int(x) if x.isdigit() else 0 for x in params.split(";")] if params else []
        n = max(nums[0], 1) if nums else 1
        if final == "A":
            self.row = max(0, self.row - n)
        elif final == "B":
            self.row = min(self.rows - 1, self.row + n)
        elif final == "C":
            self.col = min(self.cols - 1, self.col + n)
        elif final == "D":
            self.col = max(0, self.col - n)
        elif final in "Hf":
            row = nums[0] if nums else 1
            col = nums[1] if len(nums) > 1 else 1
            self.row, self.col = min(max(row, 1), self.rows) - 1, min(max(col, 1), self.cols) - 1
        elif final == "J":  # 0: cursor to the end of the screen
            mode = nums[0] if nums else 0
            if mode == 0:
                self.lines[self.row][self.col :] = [" "] * (self.cols - self.col)
                for r in range(self.row + 1, self.rows):
                    self.lines[r] = [" "] * self.cols
            elif mode in (2, 3):
                self.lines = [[" "] * self.cols for _ in range(self.rows)]
        elif final == "K":
            mode = nums[0] if nums else 0
            if mode == 0:
                self.lines[self.row][self.col :] = [" "] * (self.cols - self.col)
            elif mode == 2:
                self.lines[self.row] = [" "] * self.cols

    def _chars(self, text: str) -> None:
        for ch in text:
            if ch == "\r":
                self.col = 0
            elif ch == "\n":
                if self.row == self.rows - 1:
                    self.lines = [*self.lines[1:], [" "] * self.cols]
                else:
                    self.row += 1
            elif ch == "\b":
                self.col = max(0, self.col - 1)
            elif ch >= " ":
                self.lines[self.row][self.col] = ch
                self.col = min(self.cols - 1, self.col + 1)  # autowrap is off (\x1b[?7l)

    def text(self) -> str:
        return "\n".join("".join(line).rstrip() for line in self.lines)


class Terminal:
    """A child process on a pseudo-terminal: `text` is everything it wrote with the escapes
    removed (a log), `screen` what a terminal would show now."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
        os.close(slave)
        self.master = master
        self.text = ""
        self.screen = Screen(ROWS, COLS)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def pump(self, timeout: float) -> None:
        """Read what is there (waiting up to `timeout`), answering cursor-position requests
        with where the cursor is."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            data = b""
        if not data:
            time.sleep(min(timeout, 0.01))
            return
        chunk = self._decoder.decode(data)
        # Feed up to each request, so the reported position is the one at that moment.
        parts = chunk.split(CPR_REQUEST)
        for i, part in enumerate(parts):
            self.screen.feed(part)
            if i < len(parts) - 1:
                os.write(self.master, f"\x1b[{self.screen.row + 1};{self.screen.col + 1}R".encode())
        self.text += ANSI.sub("", chunk)

    def wait_for(self, found: Callable[[Terminal], bool], timeout: float, what: str) -> float:
        """Pump until `found(self)` is true; the elapsed time since spawn then."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if found(self):
                return self.elapsed()
            if self.proc.poll() is not None:
                self.pump(0.05)
                if found(self):
                    return self.elapsed()
                raise RuntimeError(
                    f"ragchat chat exited ({self.proc.returncode}) before {what}; screen:\n"
                    + self.screen.text()
                )
            self.pump(0.02)
        raise RuntimeError(f"no {what} within {timeout:.0f}s; screen:\n" + self.screen.text())

    def send(self, data: str) -> None:
        os.write(self.master, data.encode("utf-8"))

    def wait_exit(self, timeout: float) -> float:
        """Pump until the process has exited; seconds it took from now."""
        started = time.perf_counter()
        while self.proc.poll() is None:
            if time.perf_counter() - started > timeout:
                self.proc.kill()
                raise RuntimeError(f"ragchat chat still running {timeout:.0f}s after Ctrl-D")
            self.pump(0.02)
        return time.perf_counter() - started

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


def prompt_shown(term: Terminal) -> bool:
    """The prompt was drawn after the banner (its first paint: keys are read from here)."""
    end = term.text.find(BANNER_END)
    return end >= 0 and PROMPT.search(term.text, end) is not None


def chat_once(cmd: list[str], env: dict[str, str], model: str, timeout: float) -> dict[str, float]:
    """Spawn the chat; prompt, model-ready and exit times."""
    ready = re.compile(rf"model {re.escape(model)} \(ready\)")
    term = Terminal(cmd, env)
    try:
        prompt_s = term.wait_for(prompt_shown, timeout, "prompt")
        ready_s = term.wait_for(
            lambda t: ready.search(t.screen.text()) is not None, timeout, "model ready"
        )
        term.send("\x04")  # Ctrl-D at the empty prompt: leave
        exit_s = term.wait_exit(timeout)
        return {"prompt_s": prompt_s, "ready_s": ready_s, "exit_s": exit_s}
    finally:
        term.close()


def answer_once(cmd: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Spawn the chat, type QUESTION as soon as the prompt shows; time to the timing line."""
    term = Terminal(cmd, env)
    try:
        prompt_s = term.wait_for(prompt_shown, timeout, "prompt")
        term.send(QUESTION + "\r")
        start = len(term.text)
        answer_s = term.wait_for(
            lambda t: TIMING.search(t.text, start) is not None, timeout, "answer"
        )
        line = next((ln for ln in term.text[start:].splitlines() if TIMING.search(ln)), "").strip()
        first = re.search(r"first token ([\d.]+)s", line)
        waited = re.search(r"waited ([\d.]+)s for the model", line)
        after = TIMING.search(term.text, start)
        assert after is not None
        term.wait_for(lambda t: PROMPT.search(t.text, after.end()) is not None, timeout, "prompt")
        term.send("\x04")
        term.wait_exit(timeout)
        return {
            "prompt_s": prompt_s,
            "answer_s": answer_s,
            "reported_first_token_s": float(first.group(1)) if first else None,
            "reported_wait_for_model_s": float(waited.group(1)) if waited else 0.0,
            "timing_line": line,
        }
    finally:
        term.close()


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    """(wall seconds from spawn to exit, exit status)."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True)
    return time.perf_counter() - started, proc.returncode


def imports_torch(cmd: list[str], env: dict[str, str]) -> bool:
    """Whether the command imports torch (one run under `python -X importtime`)."""
    python = [sys.executable, "-X", "importtime", "-m", "ragchat", *cmd]
    proc = subprocess.run(python, env=env, capture_output=True, text=True)
    return any(line.rstrip().endswith("| torch") for line in proc.stderr.splitlines())


def commands(ragchat: list[str], env: dict[str, str], args: argparse.Namespace) -> list[dict]:
    """The one-shot commands, from process start to exit."""
    model = ["--model", args.model] if args.model else []
    cases = [
        ("ingest (unchanged file)", ["ingest", str(SAMPLE), "--index", INDEX, "--quiet"]),
        ("search", ["search", QUESTION, "--index", INDEX, "-k", "3"]),
        ("ask", ["ask", QUESTION, "--index", INDEX, *model]),
        ("ask --model no-such-model", ["ask", QUESTION, "--index", INDEX, "-m", "no-such"]),
    ]
    rows = []
    for label, cmd in cases:
        runs = [timed([*ragchat, *cmd], env) for _ in range(args.command_repeats)]
        rows.append(
            {
                "command": label,
                "seconds": [r[0] for r in runs],
                "status": sorted({r[1] for r in runs}),
                "torch": imports_torch(cmd, env),
            }
        )
    return rows


def print_commands(rows: list[dict]) -> None:
    try:
        load = f"{os.getloadavg()[0]:.2f}"
    except OSError:
        load = "?"
    print(f"\n{'from process start':<30} {'median s':>9} {'min–max s':>12} {'exit':>5} torch")
    for r in rows:
        status = ",".join(map(str, r["status"]))
        print(
            f"{r['command']:<30} {med(r['seconds']):>9.2f} {spread(r['seconds']):>12} "
            f"{status:>5} {'yes' if r['torch'] else 'no'}"
        )
    print(f"(1-minute load average after the runs: {load})")


def med(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f}" if values else "—"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--help-repeats", type=int, default=10)
    parser.add_argument("--chat-repeats", type=int, default=5)
    parser.add_argument("--answer-repeats", type=int, default=3, help="0 skips the answer runs")
    parser.add_argument("--model", help="--model for the chat (default: ragchat's default)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=default_cache_dir(),
        help="model cache (default: $RAGCHAT_CACHE_DIR or /tmp/rc-cache)",
    )
    parser.add_argument("--timeout", type=float, default=300, help="per wait, seconds")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--command-repeats", type=int, default=3)
    parser.add_argument("--commands-only", action="store_true", help="skip the chat runs")
    args = parser.parse_args()

    from ragchat.config import Settings

    model = args.model or Settings().model
    ragchat = ragchat_command()
    results: dict[str, Any] = {"command": ragchat, "model": model, "question": QUESTION}
    with tempfile.TemporaryDirectory(prefix="rc-bench-startup-") as tmp:
        env = dict(os.environ)
        env.update(
            RAGCHAT_INDEX_DIR=str(Path(tmp) / "indexes"),
            RAGCHAT_CACHE_DIR=str(args.cache_dir.resolve()),
            TERM=env.get("TERM") or "xterm-256color",
            COLUMNS=str(COLS),
            LINES=str(ROWS),
        )
        env.pop("RAGCHAT_DEBUG", None)
        print(f"ragchat: {' '.join(ragchat)}; model {model}; cache {args.cache_dir}")

        python = [wall([sys.executable, "-c", "pass"], env) for _ in range(args.help_repeats)]
        helps = [wall([*ragchat, "--help"], env) for _ in range(args.help_repeats)]
        results["python_pass_s"] = python
        results["help_s"] = helps

        started = time.perf_counter()
        ingest = subprocess.run(
            [*ragchat, "ingest", str(SAMPLE), "--index", INDEX, "--quiet"],
            env=env,
            capture_output=True,
            text=True,
        )
        if ingest.returncode != 0:
            print(f"ingest failed ({ingest.returncode}): {ingest.stderr[-800:]}", file=sys.stderr)
            return 1
        results["ingest_s"] = time.perf_counter() - started

        results["commands"] = commands(ragchat, env, args)
        if args.commands_only:
            print_commands(results["commands"])
            return 0

        chat_cmd = [*ragchat, "chat", "--index", INDEX]
        if args.model:
            chat_cmd += ["--model", args.model]
        chats = [chat_once(chat_cmd, env, model, args.timeout) for _ in range(args.chat_repeats)]
        answers = [answer_once(chat_cmd, env, args.timeout) for _ in range(args.answer_repeats)]
        results["chat"] = chats
        results["answer"] = answers

    print_commands(results["commands"])
    rows: list[tuple[str, list[float], str]] = [
        ("python -c pass", python, "interpreter start, for scale"),
        ("ragchat --help", helps, ""),
    ]
    for key, label, note in (
        ("prompt_s", "chat: prompt shown", "accepts input from here"),
        ("ready_s", "chat: model ready (toolbar)", "toolbar redraws every 0.5 s"),
        ("exit_s", "chat: Ctrl-D → exited", "after the model was ready"),
    ):
        rows.append((label, [c[key] for c in chats], note))
    if answers:
        rows.append(("answer run: prompt shown", [a["prompt_s"] for a in answers], ""))
        rows.append(
            (
                "answer run: answer done",
                [a["answer_s"] for a in answers],
                "from spawn, typed at once",
            )
        )
        rows.append(
            (
                "  reported wait for model",
                [a["reported_wait_for_model_s"] for a in answers],
                "from the timing line",
            )
        )
        firsts = [a["reported_first_token_s"] for a in answers]
        rows.append(
            ("  reported first token", [f for f in firsts if f is not None], "from the timing line")
        )
    print(f"\n{'':<30} {'median s':>9} {'min–max s':>12} {'n':>3}")
    for label, values, note in rows:
        m = med(list(values))
        print(
            f"{label:<30} {('—' if m is None else f'{m:.2f}'):>9} {spread(values):>12} "
            f"{len(values):>3}  {note}"
        )
    if answers:
        print(f"\nquestion: {QUESTION!r}; last timing line: {answers[-1]['timing_line']}")
    results["medians"] = {label: med(list(values)) for label, values, _ in rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
