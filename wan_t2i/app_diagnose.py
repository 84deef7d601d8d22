"""The app's Diagnose tab and its `/diagnose` endpoint: the checkpoint doctor's report on the loaded model.

The doctor (`wan_t2i.doctor`, docs/doctor.md) checks the VAE round trip, what the model predicts and how it is
sampled, and, with a teacher loaded, the student against it; here it runs on the pipeline the app serves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

    from wan_t2i.pipeline import WanT2IPipeline


def add_diagnose_tab(pipe: WanT2IPipeline, concurrency_id: str) -> None:
    """The Diagnose tab's layout and its event, which is also the API's `/diagnose`; call inside a `gr.Tab`."""
    import gradio as gr

    from wan_t2i.handlers import one_line

    gr.Markdown(
        "The checkpoint doctor on the model this app serves: the VAE round trip, what the model predicts (velocity or "
        "noise, and on which timestep scale), the sampler it needs, and, with a teacher loaded, the student against "
        "it. It takes a few seconds on the demo model, minutes on a large one."
    )
    run = gr.Button("Run the doctor", variant="primary", elem_id="diagnose-run")
    figure = gr.Image(
        label="The doctor's figure", format="png", type="pil", interactive=False, elem_id="diagnose-figure"
    )
    report = gr.Markdown(elem_id="diagnose-report")

    def diagnose_model() -> tuple[Image.Image, str]:
        """Run the checkpoint doctor on the loaded model.

        Returns:
            The doctor's figure (PNG) and its report as Markdown, each check with its verdict.
        """
        from wan_t2i.doctor.diagnose import diagnose  # the module: the package attribute of that name is the module
        from wan_t2i.doctor.figure import render_figure

        try:
            result = diagnose(pipe=pipe, with_teacher=pipe.components.has_teacher)
        except ValueError as error:
            raise gr.Error(one_line(error), print_exception=False) from error
        return render_figure(result), result.to_markdown()

    run.click(
        diagnose_model, outputs=[figure, report], api_name="diagnose", concurrency_id=concurrency_id,
        show_progress_on=[report],
    )  # fmt: skip
