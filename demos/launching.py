"""Serving a Gradio demo the way embtune's commands say it: the URL, and how to share it with embtune's own
option (gradio's own hint names a Python argument a command-line user never sees)."""

from __future__ import annotations

import gradio as gr


def serve(demo: gr.Blocks, *, host: str, port: int | None, share: bool, block: bool) -> gr.Blocks:
    """Launch quietly, then print where the demo is, and the public link when ``--share`` asked for one."""
    demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True, quiet=True)
    print(f"demo at {demo.local_url}" + (f" — public link: {demo.share_url}" if share and demo.share_url else
                                        " (--share asks gradio for a public link; it needs internet)"), flush=True)
    if block:
        demo.block_thread()
    return demo
