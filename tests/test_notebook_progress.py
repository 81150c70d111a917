"""`sim.run` in a notebook shows its progress as a widget: ipywidgets comes with roomlab."""

from __future__ import annotations

import nbformat
from nbclient import NotebookClient

CELLS = [
    "import roomlab\nfrom roomlab.sim import Cursor\nserver = roomlab.serve()",
    "sim = roomlab.Simulation(server, room='progress', workers=0)\n"
    "sim.add(identity='a', data=[Cursor(rate_hz=5)])\n"
    "await sim.run(1)",
    "server.stop()\nsorted(sim.states.items())",
]


def test_sim_run_in_a_notebook_shows_a_progress_widget_and_no_warning(tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in CELLS])
    resources = {"metadata": {"path": str(tmp_path)}}
    NotebookClient(notebook, timeout=60, kernel_name="python3", resources=resources).execute()
    run = notebook.cells[1].outputs
    text = "".join(output.get("text", "") for output in run if output["output_type"] == "stream")
    assert "IProgress not found" not in text and "TqdmWarning" not in text, text
    widgets = [o for o in run if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(widgets) == 1  # tqdm.auto's bar, drawn with ipywidgets
    assert notebook.cells[2].outputs[0]["data"]["text/plain"] == "[('a', 'left')]"
