"""Verify suite: ``verify`` against ``cloud`` and ``speculative`` on the same prompts.

Time until the user sees text, time until the final answer, how many tokens the cloud
had to decode and to prefill (in verify mode the accepted draft tokens cost it a prefill,
not a decode; each check prefills the whole conversation again, as vLLM skips its prefix
cache for requests that ask for prompt log-probabilities), with the acceptance rate of the
draft; at 0 and 100 ms round trips. Each of the 3 prompts is asked 3 times in every mode,
in 3 rounds; times are medians over those 9 answers, tokens and round trips are sums over
them.
"""

from __future__ import annotations

from typing import Any

from speculate.bench.network import Answer, median_ms, run_modes


def _row(rtt: int, mode: str, answers: list[Answer]) -> dict[str, Any]:
    accepted = sum(a.stats.get("accepted_tokens", 0) for a in answers)
    rejected = sum(a.stats.get("rejected_tokens", 0) for a in answers)
    decoded = [a.stats.get("cloud_decode_tokens", a.stats.get("cloud_tokens", 0)) for a in answers]
    prefilled = [
        a.stats.get("cloud_prefill_tokens", a.stats.get("prompt_tokens", 0)) for a in answers
    ]
    waited = [a.stats.get("verify_wait_ms", 0) / 1000 for a in answers]
    return {
        "rtt_ms": rtt,
        "mode": mode,
        "first_text_ms": median_ms([a.first_s for a in answers]),
        "final_ms": median_ms([a.final_s for a in answers]),
        "cloud_decode_tokens": sum(decoded),
        "cloud_prefill_tokens": sum(prefilled),
        "acceptance": round(accepted / (accepted + rejected), 3) if accepted + rejected else None,
        "round_trips": sum(a.stats.get("verify_round_trips", 0) for a in answers),
        "waiting_for_checks_ms": median_ms(waited),
    }


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """verify over cloud and over speculative, per round trip (below 1: verify is less)."""
    out = []
    for rtt in sorted({r["rtt_ms"] for r in rows}):
        by_mode = {r["mode"]: r for r in rows if r["rtt_ms"] == rtt}
        verify = by_mode["verify"]
        for other in ("cloud", "speculative"):
            base = by_mode[other]
            out.append(
                {
                    "rtt_ms": rtt,
                    "verify_vs": other,
                    "first_text": round(verify["first_text_ms"] / base["first_text_ms"], 2),
                    "final": round(verify["final_ms"] / base["final_ms"], 2),
                    "cloud_decode_tokens": round(
                        verify["cloud_decode_tokens"] / max(1, base["cloud_decode_tokens"]), 2
                    ),
                    "cloud_prefill_tokens": round(
                        verify["cloud_prefill_tokens"] / max(1, base["cloud_prefill_tokens"]), 2
                    ),
                }
            )
    return out


def run(rtts_ms: tuple[int, ...] = (0, 100)) -> dict[str, Any]:
    modes = ("verify", "cloud", "speculative")
    rows = run_modes(rtts_ms, modes, _row, max_tokens=64, repeats=3)
    return {"rows": rows, "ratios": ratios(rows)}
