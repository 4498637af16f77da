"""The Gradio page: upload a video or pick an example, run the model, see and download the result.

    demo = build_app(predictor, examples, max_upload_mb=200)
    launch_app(demo, host="127.0.0.1", port=7860)          # blocks; block=False for tests

Nothing here talks to the internet: analytics are off (set before Gradio is imported and on the
Blocks), there is no share link, server-side rendering (a Node server) is off, and the page's
theme uses fonts Gradio serves itself.
"""

from __future__ import annotations

import html
import logging
import os
import re
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no version check, no telemetry
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402

from avseg.app.results import (  # noqa: E402
    RunStore,
    build_timeline,
    check_upload_size,
    format_size,
    max_upload_bytes,
    timeline_csv,
    timeline_html,
    zip_outputs,
)
from avseg.errors import UserError  # noqa: E402
from avseg.inference.predictor import RANDOM_INIT_WARNING, Predictor  # noqa: E402
from avseg.inference.video import probe_video  # noqa: E402

log = logging.getLogger("avseg.app")

CSS = """
.avseg-banner {background: #b91c1c; color: #fff; padding: 10px 14px; border-radius: 6px; font-weight: 600;}
.avseg-status {padding: 8px 12px; border-radius: 6px; margin: 2px 0;}
.avseg-ok {background: #ecfdf5; color: #065f46; border: 1px solid #a7f3d0;}
.avseg-error {background: #fef2f2; color: #991b1b; border: 1px solid #fecaca;}
.avseg-note {background: #fffbeb; color: #92400e; border: 1px solid #fde68a;}
.avseg-idle {background: #f3f4f6; color: #374151;}
.avseg-scroll {overflow-x: auto;}
.avseg-timeline table {border-collapse: collapse; font-size: 13px;}
.avseg-timeline th, .avseg-timeline td {border: 1px solid #d1d5db; padding: 2px 6px; text-align: center;
  min-width: 2.2em; color: #111827;}
.avseg-timeline tbody th {text-align: left; white-space: nowrap; font-weight: 500;}
.avseg-timeline td.avseg-on {font-weight: 600;}
.avseg-timeline td.avseg-na {color: #9ca3af; background: #f9fafb;}
.avseg-swatch {display: inline-block; width: 10px; height: 10px; margin-right: 6px; border: 1px solid #6b7280;}
.avseg-legend, .avseg-summary {font-size: 13px; margin: 4px 0;}
"""

IDLE_TIMELINE = '<div class="avseg-timeline"><p>The timeline appears here after a run.</p></div>'


def _status(kind: str, text: str) -> str:
    """A status line for the page; `text` is escaped here."""
    return f'<div class="avseg-status avseg-{kind}">{html.escape(text)}</div>'


def _clean(message: str, folder: Path) -> str:
    """An error for the page: without the server's upload folder and errno numbers."""
    return re.sub(r"\[Errno -?\d+\] ", "", message.replace(f"{folder}{os.sep}", ""))


def _model_line(predictor: Predictor) -> str:
    config = predictor.config
    source = (f"checkpoint {Path(predictor.checkpoint).name}" if predictor.checkpoint
              else f"config {Path(predictor.config_path).name}, random weights" if predictor.config_path
              else "in-memory model")
    classes = len(predictor.class_names) - 1
    return (f"**Model:** {config.model.name} / {config.model.backbone}, {config.data.dataset} "
            f"({classes} {'class' if classes == 1 else 'classes'}), {config.data.image_size} px, "
            f"{source}, on {predictor.device}.")


class Runner:
    """The page's one action: a video path in, (overlay, timeline, zip, status) out."""

    def __init__(self, predictor: Predictor, max_bytes: int, store: RunStore):
        self.predictor, self.max_bytes, self.store = predictor, max_bytes, store

    def __call__(self, video: str | None, progress=None):
        progress = progress or (lambda *args, **kwargs: None)
        if not video:
            return None, IDLE_TIMELINE, None, _status(
                "error", f"No video: upload one (up to {format_size(self.max_bytes)}) or pick an example first.")
        name = Path(video).name
        try:
            return self._run(Path(video), progress)
        except UserError as err:
            return None, IDLE_TIMELINE, None, _status("error", _clean(str(err), Path(video).parent))
        except Exception as err:  # never a traceback on the page; the server log has it
            log.exception("avseg app: the run on %s failed", name)
            return None, IDLE_TIMELINE, None, _status(
                "error", f"{name}: the run failed ({type(err).__name__}: {err}); details are in the server log.")

    def _run(self, video: Path, progress):
        start = time.perf_counter()
        check_upload_size(video, self.max_bytes)  # before anything decodes the file
        info = probe_video(video)  # a file that is not a video stops here, with FFmpeg's reason
        expected = max(1, int(round(info.duration_hint))) if info.duration_hint else None
        out = self.store.new()
        done = 0

        def on_frame(_result) -> None:
            nonlocal done
            done += 1
            progress((done, expected) if expected and done <= expected else None, desc="segmenting",
                     unit="frames")

        progress(0, desc="decoding")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = self.predictor.predict_video(video, out, allow_silent=True, on_frame=on_frame)
        timeline = build_timeline(report)
        stem = video.stem or "video"
        archive = zip_outputs(out, out / f"{stem}-avseg-masks.zip", {"timeline.csv": timeline_csv(timeline)})
        notes = []
        if report.get("silent"):
            notes.append("the video has no sound (no audio track, or an empty one): the model heard silence")
        notes += [_clean(str(w.message), video.parent) for w in caught
                  if "RANDOM INIT" not in str(w.message) and "heard silence" not in str(w.message)]
        seconds = time.perf_counter() - start
        summary = (f"{video.name}: {len(report['frames'])} frames segmented "
                   f"({report['video']['width']}x{report['video']['height']}, "
                   f"{report['video']['duration']:.1f} s) in {seconds:.1f} s.")
        status = _status("ok", summary) + "".join(_status("note", "Note: " + n) for n in notes)
        if self.predictor.random_init:
            status += _status("error", "Random weights: these results are meaningless.")
        overlay = out / "overlay.mp4"
        return (str(overlay) if overlay.exists() else None, timeline_html(timeline, self.predictor.palette),
                str(archive), status)


def build_app(predictor: Predictor, examples: Sequence[str | Path] = (), max_upload_mb: float = 200,
              *, work_dir: str | Path | None = None) -> gr.Blocks:
    """The page for one predictor. `examples`: video files offered as one-click inputs.

    `launch_app` starts it with the settings it needs (upload limit, local address, no share).
    """
    max_bytes = max_upload_bytes(max_upload_mb)
    examples = [Path(p).resolve() for p in examples]
    store = RunStore(work_dir)
    runner = Runner(predictor, max_bytes, store)

    def segment(video: str | None, progress=gr.Progress()):
        return runner(video, progress)
    with gr.Blocks(title="avseg: audio-visual segmentation", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as demo:
        if predictor.random_init:
            gr.HTML(f'<div class="avseg-banner" id="avseg-random-init">WARNING: {html.escape(RANDOM_INIT_WARNING)}'
                    "</div>")
        gr.Markdown("# avseg: which objects make the sound?\n"
                    "Upload a video (or pick an example) and press **Segment**: the objects that sound "
                    "are coloured in the overlay, the timeline lists which classes sound in each second, "
                    "and the zip holds every mask and `predictions.json`.\n\n" + _model_line(predictor))
        with gr.Row():
            with gr.Column(scale=1):
                video_in = gr.Video(label="Video", sources=["upload"], elem_id="avseg-input", height=320)
                gr.Markdown(f"Videos up to **{format_size(max_bytes)}**, any container and codec FFmpeg reads; "
                            "one frame per second is segmented, each with the second of sound that starts there.",
                            elem_id="avseg-limit")
                run = gr.Button("Segment", variant="primary", elem_id="avseg-run")
                if examples:
                    gr.Examples(examples=[[str(p)] for p in examples], inputs=[video_in],
                                label="Synthetic examples (generated, never downloaded)",
                                example_labels=[p.stem for p in examples], cache_examples=False)
            with gr.Column(scale=1):
                overlay = gr.Video(label="Overlay (sounding objects coloured)", elem_id="avseg-overlay",
                                   interactive=False, height=320, buttons=["download"])
                status = gr.HTML(_status("idle", "Ready."), elem_id="avseg-status")
        gr.Markdown("### Timeline: which classes sound, second by second")
        timeline = gr.HTML(IDLE_TIMELINE, elem_id="avseg-timeline")
        download = gr.File(label="Masks (PNG, class ids) + predictions.json + timeline.csv (zip)",
                           elem_id="avseg-download", interactive=False)
        run.click(segment, inputs=[video_in], outputs=[overlay, timeline, download, status],
                  api_name="segment", concurrency_limit=1)
    demo.queue(default_concurrency_limit=1, max_size=16)
    demo.avseg_settings = {"max_bytes": max_bytes, "allowed_paths": sorted({str(p.parent) for p in examples}),
                           "store": store}
    return demo


def launch_app(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, *, block: bool = True,
               quiet: bool = False):
    """Serve a page made by `build_app` on host:port: upload limit set in Gradio too, no share
    link, no analytics, no Node server. With `block=False` it returns once the server is up."""
    settings = getattr(demo, "avseg_settings", {})
    return demo.launch(
        server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=not block,
        max_file_size=settings.get("max_bytes"), allowed_paths=settings.get("allowed_paths") or None,
        show_error=False, quiet=quiet, ssr_mode=False, enable_monitoring=False, mcp_server=False, pwa=False,
        footer_links=["api", "settings"], css=CSS,
    )
