"""The app's Diagnose tab and its `/diagnose` endpoint: the checkpoint doctor's report on the loaded model.

The doctor (`wan_t2i.doctor`, docs/doctor.md) checks the VAE round trip, what the model predicts and how it is
sampled, and, with a teacher loaded, the student against it; here it runs on the pipeline the app serves, as a job of
the app's one handler (on the GPU, one at a time, stoppable, within the time limit). The served model does not change,
so its report is kept once made: later runs show it at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

    from wan_t2i.doctor.report import DoctorReport
    from wan_t2i.handlers import Handler


def add_diagnose_tab(handler: Handler, concurrency_id: str) -> None:
    """The Diagnose tab's layout and its event, which is also the API's `/diagnose`; call inside a `gr.Tab`."""
    import gradio as gr

    from wan_t2i.jobs import Job

    gr.Markdown(
        "The checkpoint doctor on the model this app serves: the VAE round trip, what the model predicts (velocity or "
        "noise, and on which timestep scale), the sampler it needs, and, with a teacher loaded, the student against "
        "it. It takes a few seconds on the demo model, minutes on a large one; once made, the report is kept."
    )
    run = gr.Button("Run the doctor", variant="primary", elem_id="diagnose-run")
    status = gr.Markdown(elem_id="diagnose-status", min_height=24)
    figure = gr.Image(
        label="The doctor's figure", format="png", type="pil", interactive=False, elem_id="diagnose-figure"
    )
    report = gr.Markdown(elem_id="diagnose-report")
    job = Job("diagnose")
    handler.pin(job)  # the served model's report does not change

    def shape(result: DoctorReport, _: dict[str, Any]) -> tuple[Image.Image, str]:
        from wan_t2i.doctor.figure import render_figure

        return render_figure(result), result.to_markdown()

    run.click(
        handler.endpoint(shape, [], 2, prepare=lambda _: job),
        outputs=[figure, report],
        api_name="diagnose",
        api_description="Run the checkpoint doctor on the served model. Returns the doctor's figure (PNG) and its "
        "report as Markdown, each check with its verdict.",
        concurrency_id=concurrency_id,
        show_progress_on=[status],
    )
