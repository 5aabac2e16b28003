#!/usr/bin/env python3
"""scripts/docs-outputs.py — check the example outputs in the docs against what the
walkthrough saw.

Usage:
  scripts/docs-outputs.py check RECORD_DIR FILE...   compare every marked block of FILE... with
                                                     the outputs scripts/walkthrough.sh recorded
                                                     in RECORD_DIR (WALKTHROUGH_RECORD)
  scripts/docs-outputs.py update RECORD_DIR FILE...  rewrite every marked block that differs with
                                                     what was recorded (then shorten tokens and
                                                     long lines by hand with … where wanted)
  scripts/docs-outputs.py steps FILE...              the step names the marked blocks use

An example output is a fenced block (```json or ```text) whose opening fence follows a marker
line such as

  <!-- output: curl-get-user curl-update-user|pretty -->

Each name is a step that scripts/walkthrough.sh records (`record NAME TEXT`); the block must be
the steps' outputs one after the other. `NAME|pretty` is the output as `python3 -m json.tool`
prints it. Every json or text block of a checked file must carry a marker (or
`<!-- output: none -->` when it is not an output of the walkthrough).

What differs on every run is masked on both sides before comparing: UUIDs, RFC 3339 times,
access, refresh and page tokens, the run's user names (alice_<epoch>_<n>, bob_…, banker_…). In the
docs, `…` stands for any text within a line and a line `...` for any number of lines.
"""

import difflib
import json
import re
import sys
from pathlib import Path

MARKER = re.compile(r"^<!-- output: (?P<steps>[^>]*?) -->$")
FENCE_OPEN = re.compile(r"^```(?P<lang>[a-z]*)$")
OUTPUT_LANGS = {"json", "text"}

MASKS = [
    (re.compile(r'"(accessToken|refreshToken)"(\s*:\s*)"[^"]*"'), r'"\1"\2"<token>"'),
    # A page token names the last item of its page (an id): it differs on every run. An empty
    # one (the last page) is compared.
    (re.compile(r'"nextPageToken"(\s*:\s*)"[^"]+"'), r'"nextPageToken"\1"<page-token>"'),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z"), "<time>"),
    (re.compile(r"\b(alice|bob|banker)_\d+(?:_\d+)?\b"), r"\1_<n>"),
]


def mask(text):
    for pattern, replacement in MASKS:
        text = pattern.sub(replacement, text)
    return text


def blocks(path):
    """Yield (line number, marker steps or None, language, body) for every fenced block."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    marker, i = None, 0
    while i < len(lines):
        line = lines[i]
        found = MARKER.match(line.strip())
        opening = FENCE_OPEN.match(line)
        if found:
            marker = (i + 1, found.group("steps").split())
        elif opening:
            start, lang, body = i + 1, opening.group("lang"), []
            i += 1
            while i < len(lines) and lines[i] != "```":
                body.append(lines[i])
                i += 1
            steps = marker[1] if marker and marker[0] >= start - 2 else None
            yield start, steps, lang, "\n".join(body) + "\n" if body else ""
            marker = None
        elif line.strip():
            marker = None
        i += 1


def pattern_of(expected):
    """The docs block as a regular expression over the masked output."""
    parts = []
    for line in expected.splitlines():
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(".*?".join(re.escape(piece) for piece in line.split("…")) + r"\n")
    return re.compile("".join(parts))


def recorded(record_dir, step):
    name, _, form = step.partition("|")
    path = Path(record_dir) / f"{name}.txt"
    if not path.exists():
        raise LookupError(f"step {name!r} was not recorded (no {path.name})")
    text = path.read_text(encoding="utf-8")
    if form == "pretty":
        text = json.dumps(json.loads(text), indent=4) + "\n"
    elif form:
        raise LookupError(f"step {step!r}: unknown form {form!r} (only |pretty)")
    return text if text.endswith("\n") else text + "\n"


def unmarked(path):
    return [
        f"{path}:{start}: a ```{lang} block without an <!-- output: ... --> marker"
        for start, steps, lang, _ in blocks(path)
        if lang in OUTPUT_LANGS and steps is None
    ]


def check(record_dir, files):
    problems = []
    checked = 0
    for path in files:
        problems += unmarked(path)
        for start, steps, lang, body in blocks(path):
            if not steps or steps == ["none"]:
                continue
            try:
                actual = "".join(recorded(record_dir, step) for step in steps)
            except (LookupError, ValueError) as error:
                problems.append(f"{path}:{start}: {error}")
                continue
            checked += 1
            expected = mask(body)
            if not pattern_of(expected).fullmatch(mask(actual)):
                diff = difflib.unified_diff(
                    expected.splitlines(), mask(actual).splitlines(),
                    f"{path}:{start} (docs, masked)", f"{' '.join(steps)} (seen, masked)",
                    lineterm="",
                )
                problems.append("\n".join(diff))
    for problem in problems:
        print(f"docs-outputs.py: {problem}", file=sys.stderr)
    if problems:
        print(f"docs-outputs.py: {len(problems)} example output(s) differ from the walkthrough",
              file=sys.stderr)
        return 1
    print(f"docs-outputs.py: {checked} example outputs match what the walkthrough saw")
    return 0


def update(record_dir, files):
    """Replaces the body of every marked block that does not match with the recorded text."""
    for path in files:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
        replacements = []
        for start, steps, _, body in blocks(path):
            if not steps or steps == ["none"]:
                continue
            actual = "".join(recorded(record_dir, step) for step in steps)
            if not pattern_of(mask(body)).fullmatch(mask(actual)):
                # The body's lines (none for an empty block), not the closing fence.
                replacements.append((start, body.count("\n"), actual.rstrip("\n").split("\n")))
        for start, length, new in reversed(replacements):
            lines[start:start + length] = new
        Path(path).write_text("\n".join(lines), encoding="utf-8")
        print(f"docs-outputs.py: {path}: {len(replacements)} block(s) rewritten")
    return 0


def main(argv):
    if len(argv) >= 3 and argv[1] == "check":
        return check(argv[2], argv[3:])
    if len(argv) >= 3 and argv[1] == "update":
        return update(argv[2], argv[3:])
    if len(argv) >= 2 and argv[1] == "steps":
        for path in argv[2:]:
            for _, steps, _, _ in blocks(path):
                for step in steps or []:
                    if step != "none":
                        print(step.partition("|")[0])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
