"""Draw docs/figures/avsync_timeline.png: frames, audio steps and slots under the synchroniser's time rule.

The assignment shown is computed by ``favor_avsync.TemporalSynchroniser`` itself (each step's feature is its
index), so the figure cannot drift from the code. Run: ``python docs/draw_timeline.py``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Rectangle

from favor_avsync import TemporalSynchroniser

FPS = 2.0
RATES = (50.0, 7.3)  # Whisper-rate stream, and a slow stream whose steps straddle frame boundaries
SLOTS = 32
SECONDS = 1.5
COLOURS = ["#4C72B0", "#DD8452", "#55A868"]
OUT = Path(__file__).resolve().parent / "figures" / "avsync_timeline.png"


def main() -> None:
    sync = TemporalSynchroniser(fps=FPS, audio_rates=RATES, tokens_per_frame=SLOTS)
    frames = sync.frames_for_duration(SECONDS)
    steps = [int(SECONDS * r) for r in RATES]
    visual = torch.zeros(1, frames, SLOTS, 1, dtype=torch.float64)
    audio = [torch.arange(1, s + 1, dtype=torch.float64)[None, :, None] for s in steps]  # feature = index + 1
    out = sync(visual, audio)
    feats = out.features[0]  # (T, N, 1 + 1 + 1)

    fig, (ax, ax_slots) = plt.subplots(
        2, 1, figsize=(11, 6.2), gridspec_kw={"height_ratios": [1.25, 1.0]}, constrained_layout=True
    )
    # --- timeline
    for t in range(frames):
        start, end = out.frame_times[0, t].tolist()
        ax.add_patch(Rectangle((start, 2.1), end - start, 0.7, color=COLOURS[t], alpha=0.35, lw=0))
        ax.text(
            (start + end) / 2,
            2.45,
            f"frame {t}: [{start:g}, {end:g}) s",
            ha="center",
            va="center",
            fontsize=9,
        )
        ax.axvline(start, color="grey", lw=0.8, ls="--")
        ax.plot([(start + end) / 2], [2.1], marker="v", color="black", ms=5)
    ax.axvline(SECONDS, color="grey", lw=0.8, ls="--")
    for row, (rate, s) in enumerate(zip(RATES, steps)):
        y = 1.15 - row * 1.0
        col = feats[..., 1 + row]
        frame_of = {int(v) - 1: t for t in range(frames) for v in col[t].tolist() if v != 0}
        for j in range(s):
            start, end = j / rate, (j + 1) / rate
            t = frame_of[j]
            ax.add_patch(
                Rectangle((start, y), end - start, 0.55, facecolor=COLOURS[t], edgecolor="white", lw=0.6)
            )
            centre = (j + 0.5) / rate
            ax.plot([centre], [y + 0.275], marker="o", color="black", ms=2.2 if rate > 20 else 4)
        ax.text(-0.02, y + 0.275, f"audio {row}\n{rate:g} Hz", ha="right", va="center", fontsize=9)
    ax.text(-0.02, 2.45, f"video\n{FPS:g} fps", ha="right", va="center", fontsize=9)
    ax.set_xlim(-0.2, SECONDS + 0.02)
    ax.set_ylim(-0.05, 2.9)
    ax.set_yticks([])
    ax.set_xlabel("seconds (one clock: frame t = [t/fps, (t+1)/fps); step j = [j/r, (j+1)/r))")
    ax.set_title(
        "Time rule: each audio step goes to the frame whose interval contains its centre (dot); "
        "▼ = the instant load_media samples the picture",
        fontsize=10,
    )
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)

    # --- slots
    for t in range(frames):
        x0 = t * (SLOTS + 3)
        for row in range(len(RATES)):
            y = 1 - row
            col = feats[t, :, 1 + row]
            for i in range(SLOTS):
                filled = col[i].item() != 0
                ax_slots.add_patch(
                    Rectangle(
                        (x0 + i, y),
                        0.9,
                        0.8,
                        facecolor=COLOURS[t] if filled else "#EEEEEE",
                        edgecolor="white",
                    )
                )
                if filled and (RATES[row] < 20 or i in (0, int((col != 0).sum()) - 1)):
                    ax_slots.text(
                        x0 + i + 0.45,
                        y + 0.4,
                        str(int(col[i].item()) - 1),
                        ha="center",
                        va="center",
                        fontsize=6,
                    )
            ax_slots.text(
                x0 + SLOTS / 2, 2.0, f"frame {t}: {SLOTS} slots per stream", ha="center", fontsize=9
            )
        ax_slots.text(-0.8, 1.4, "audio 0", ha="right", va="center", fontsize=9)
        ax_slots.text(-0.8, 0.4, "audio 1", ha="right", va="center", fontsize=9)
    ax_slots.set_xlim(-6, frames * (SLOTS + 3))
    ax_slots.set_ylim(-0.2, 2.4)
    ax_slots.axis("off")
    ax_slots.set_title(
        "Slots: a frame's steps fill slots 0..k-1 in order (numbers = step index), the rest are zero (grey); "
        "features = [visual | audio 0 | audio 1] per slot",
        fontsize=10,
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
