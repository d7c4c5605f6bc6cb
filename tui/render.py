"""Rich renderings for the terminal: token heatmaps, target tables, progress bars.

Colour scale: red = positive relevance, blue = negative, white = none; symmetric
around zero and normalised by the largest |relevance| of the row shown, in the HTML
report's ten colour levels per side (:mod:`lrp_llm.export.levels`).

Every console the commands print to comes from :func:`terminal`: text from data (prompts,
tokens, model and file names) is shown literally with control characters visible, never
as markup, so a prompt cannot retitle the window or write the clipboard, in colour or not.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.console import Console, ConsoleOptions, Group, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from lrp_llm.export.levels import LEVELS, colour_level, display_scale
from lrp_llm.text import compact, visible


class TerminalConsole(Console):
    """A Console whose every text segment passes :func:`~lrp_llm.text.visible` on its way out.

    The renderers put data into ``Text`` already visible (so widths line up); this is the net
    under them: whatever reaches this console, only the styling Rich adds itself (SGR, and the
    cursor moves of a live progress display, which are control segments) is sent as escape
    codes. Strings are not parsed for markup or emoji codes.
    """

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("markup", False)
        kwargs.setdefault("emoji", False)
        super().__init__(**kwargs)

    def render(self, renderable: RenderableType, options: ConsoleOptions | None = None) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            if segment.control or not segment.text:
                yield segment
            else:
                yield segment._replace(text=visible(segment.text, keep="\n"))


def terminal(*, stderr: bool = False) -> Console:
    """The console of a command's output (stdout) or its progress and status lines (``stderr``)."""
    return TerminalConsole(stderr=stderr)


def progress_bar(console: Console, *, disabled: bool = False) -> Progress:
    """A rich progress bar on ``console``; where it is not a terminal (piped, redirected to a file), the
    same tasks print a plain line every 10 % and at least every 30 s (:class:`LineProgress`)."""
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    if not disabled and not console.is_terminal:
        return LineProgress(*columns, console=console)
    return Progress(*columns, console=console, transient=True, disable=disabled)


class LineProgress(Progress):
    """Progress for output that is not a terminal: no live display (its cursor moves would be noise in a
    log); each visible task prints ``description: done/total (p %), elapsed, ~left`` when it passes
    every 10 %, at least every ``every`` seconds, and when it completes."""

    def __init__(self, *columns, console: Console, every: float = 30.0, get_time=None) -> None:
        super().__init__(*columns, console=console, disable=True, get_time=get_time)
        self.every = every
        self._shown: dict = {}  # task id -> (tenths shown, time shown)

    def add_task(self, description: str, *args, **kwargs):  # type: ignore[override]
        task_id = super().add_task(description, *args, **kwargs)
        self._maybe_line(task_id)
        return task_id

    def update(self, task_id, **kwargs) -> None:  # type: ignore[override]
        super().update(task_id, **kwargs)
        self._maybe_line(task_id)

    def advance(self, task_id, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._maybe_line(task_id)

    def _maybe_line(self, task_id) -> None:
        task = self._tasks.get(task_id)
        if task is None or not task.visible or not task.total:
            return
        now = self.get_time()
        done, total = task.completed, task.total
        tenths = int(10 * done // total)
        last_tenths, last_time = self._shown.get(task_id, (-1, task.start_time or now))
        if tenths == last_tenths and not (done >= total > 0 and last_tenths < 10) and now - last_time < self.every:
            return
        if done >= total and last_tenths >= 10:
            return
        self._shown[task_id] = (10 if done >= total else tenths, now)
        elapsed = task.elapsed or 0.0
        left = "" if not done or done >= total else f", ~{_clock(elapsed * (total - done) / done)} left"
        self.console.print(
            Text(f"{task.description}: {done:g}/{total:g} ({100 * done / total:.0f} %), {_clock(elapsed)}{left}"),
            soft_wrap=True,
            highlight=False,
        )


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def relevance_rgb(value: float, scale: float) -> tuple[int, int, int]:
    """Background colour of a token with relevance ``value`` on a symmetric ``scale``, in the
    report's colour levels (:func:`~lrp_llm.export.levels.colour_level`)."""
    k = colour_level(value, scale)
    fade = int(round(255 * (1 - abs(k) / LEVELS)))
    return (255, fade, fade) if k >= 0 else (fade, fade, 255)


def show_token(token: str) -> str:
    """Make whitespace visible enough to read but keep the text flowing; other controls visible."""
    return visible(token.replace("\n", "↵\n").replace("\t", "→"), keep="\n")


def heatmap(
    tokens: Sequence[str],
    values: Sequence[float],
    *,
    mark: int | None = None,
    scale: float | None = None,
    sep: str = "",
) -> Text:
    """``tokens`` coloured by ``values`` (one per leading token; the token at ``mark`` underlined,
    later ones dim). ``scale``: the |relevance| of full colour (default: the largest of ``values``);
    ``sep`` follows each coloured token (SentencePiece pieces need a space between them)."""
    if scale is None:
        scale = max((abs(float(v)) for v in values), default=0.0)
    text = Text()
    for i, tok in enumerate(tokens):
        if i < len(values):
            r, g, b = relevance_rgb(float(values[i]), scale)
            text.append(show_token(tok), style=f"black on rgb({r},{g},{b})")
            text.append(sep)
        elif i == mark:
            text.append(show_token(tok), style="bold underline")
        else:
            text.append(show_token(tok), style="dim")
    return text


def run_header(result) -> Text:
    """The first line of a result printed in the terminal: model, method, seconds."""
    return Text.assemble(
        ("model ", "dim"),
        visible(result.model),
        ("  method ", "dim"),
        visible(result.method),
        ("  ", ""),
        (f"{result.seconds:.2f} s", "dim"),
    )


RIGHT_ALIGNED = {"#", "logit", "p", "Σ rel / logit", "source share"}


def targets_table(extra_columns: Sequence[str]) -> Table:
    """The table of explained tokens: #, token, logit, p, conservation, then ``extra_columns``
    (left-aligned unless named in ``RIGHT_ALIGNED``); rows start with :func:`target_cells`."""
    table = Table(show_edge=False, header_style="bold")
    for col in ("#", "token", "logit", "p", "Σ rel / logit", *extra_columns):
        table.add_column(col, justify="right" if col in RIGHT_ALIGNED else "left")
    return table


def target_cells(index: int, target) -> list[str]:
    """The first cells of ``target``'s row in :func:`targets_table`."""
    return [
        str(index),
        compact(target.token),
        f"{target.logit:.2f}",
        f"{target.probability:.2f}",
        f"{target.conservation:.3f}",
    ]


def held_apart_line(targets, held: Sequence[float]) -> Text:
    """The relevance the rules held apart (attnlrp-sink: the softmax's share for the first position), per
    target, and the conservation with it: (Σ relevance + held apart) / logit."""
    parts = []
    for i, (t, h) in enumerate(zip(targets, held)):
        total = (t.relevance_sum + h) / t.logit if t.logit else float("nan")
        parts.append(f"[{i}] {h:+.2f} ({total:.3f})")
    return Text.assemble(
        ("held apart (softmax relevance of the first position), (Σ rel + held) / logit: ", "dim"), "  ".join(parts)
    )


def target_heading(index: int, target) -> Text:
    """The line above one target's heatmap."""
    return Text.assemble(
        ("\n▶ ", "bold"), (f"[{index}] {compact(target.token)}", "bold green"), (f"  logit {target.logit:.2f}", "dim")
    )


def legend(template_apart: bool = False) -> Text:
    """The colour scale; ``template_apart``: the scale leaves special and chat-template tokens out."""
    text = Text("scale: ")
    for v in (-1.0, -0.5, 0.0, 0.5, 1.0):
        r, g, b = relevance_rgb(v, 1.0)
        text.append(f" {v:+.1f} ", style=f"black on rgb({r},{g},{b})")
    of = "max |relevance| of each row" + (
        " without special / template tokens (--scale-all: with)" if template_apart else ""
    )
    text.append(f"  (× {of}; red supports the token, blue speaks against it)", style="dim")
    return text


def _parse_which(which: str, tokens: Sequence[str]) -> list[int]:
    """``all``, ``none``, or a comma list of answer-token indices or token texts (``0,3`` or ``France``)."""
    from lrp_llm.errors import InputError

    n = len(tokens)
    if which == "all":
        return list(range(n))
    if which == "none":
        return []
    picked: list[int] = []
    for item in (x.strip() for x in which.split(",") if x.strip()):
        if item.lstrip("-").isdigit():
            i = int(item)
            if not 0 <= i < n:
                raise InputError(f"--heatmap index {i} is out of range; the answer has {n} tokens (0..{n - 1})")
            picked.append(i)
        else:
            hits = [i for i, t in enumerate(tokens) if t.strip() == item]
            if not hits:
                raise InputError(f"--heatmap: no answer token reads '{item}'; use all, none or indices like 0,3")
            picked += hits
    return picked


def render_attribution(
    console: Console, attribution, *, heatmaps: str = "all", top: int = 5, scale_all: bool = False
) -> None:
    """Answer, a table of the explained tokens with their top sources, and the heatmaps asked for.

    Special and chat-template tokens (``meta["template_positions"]``) are left out of the top sources
    (listed after them, the largest |relevance| first) and, unless ``scale_all``, out of each heatmap's
    colour scale (they are still coloured, at most at full strength)."""
    a = attribution
    which = _parse_which(heatmaps, [t.token for t in a.targets])
    template = set(a.meta.get("template_positions", ()))
    console.print(run_header(a))
    console.print(Text.assemble(("answer: ", "bold"), (visible(a.answer, keep="\n\t"), "bold green")))
    table = targets_table([f"top {top} sources"] + (["template tokens"] if template else []))
    for i, t in enumerate(a.targets):
        ranked = [j for j in t.top(len(t.relevance)) if j not in template][:top]
        cells = [", ".join(f"{compact(a.tokens[j])}@{j}" for j in ranked)]
        if template:
            apart = sorted((j for j in template if j < t.position), key=lambda j: (-abs(t.relevance[j]), j))[:2]
            cells.append(", ".join(f"{compact(a.tokens[j])}@{j} {t.relevance[j]:+.2f}" for j in apart))
        table.add_row(*target_cells(i, t), *cells)
    console.print(table)
    held = a.meta.get("held_apart")
    if held is not None:
        console.print(held_apart_line(a.targets, held))
    if which:
        console.print(legend(template_apart=bool(template) and not scale_all))
    for i in which:
        t = a.targets[i]
        scale = display_scale(t.relevance, () if scale_all else template)
        row = heatmap(a.tokens[: t.position + 1], t.relevance, mark=t.position, scale=scale)
        console.print(Group(target_heading(i, t), row))
