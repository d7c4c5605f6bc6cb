"""Report test data: text that must never become markup, and a synthetic Attribution."""

from __future__ import annotations

import numpy as np

from lrp_llm.results.attribution import Attribution, TargetRelevance

NASTY = [
    "<script>alert(1)</script>",
    "</div>",
    "</span></div></section>",
    '" onmouseover="alert(1)',
    "' onclick='x'",
    "&amp;",
    "&lt;b&gt;",
    "<!--",
    "-->",
    "<![CDATA[x]]>",
    "</script><script>alert(2)</script>",
    "</noscript><img src=x onerror=alert(3)>",
    "</style>",
    "<b>bold</b>",
    "\u2028\u2029",
    "\x00\x07\x1b",
    "\ud800",
    "",
    "\n",
    " \t",
    "a&b<c>d",
]


def make_attribution(tokens, prompt_length, *, model="tiny", seed=0, targets=None, source=None):
    rng = np.random.default_rng(seed)
    targets = list(range(prompt_length, len(tokens))) if targets is None else targets
    ts = []
    for p in targets:
        ts.append(
            TargetRelevance(
                position=p,
                token=tokens[p],
                id=p,
                logit=float(rng.normal() * 3),
                probability=float(rng.uniform()),
                relevance=rng.normal(size=p).astype(np.float32),
                source_relevance=None if source is None else rng.normal(size=len(source)),
            )
        )
    return Attribution(
        model=model,
        method="attnlrp",
        tokens=list(tokens),
        input_ids=list(range(len(tokens))),
        prompt_length=prompt_length,
        targets=ts,
        seconds=0.25,
        timings={"forward": 0.1, "backward": 0.15},
        meta={"date": "2026-01-02T03:04:05+00:00", "rules": "attnlrp", "dtype": "float32"},
        source_tokens=None if source is None else list(source),
        source_ids=None if source is None else list(range(len(source))),
    )
