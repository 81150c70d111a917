"""A notebook with a view, executed in a real kernel (nbclient) and exported without widget state
(as notebooks are committed): the output keeps the view's last picture as a PNG, which the HTML
export shows."""

from __future__ import annotations

import base64

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

CELLS = [
    """import asyncio
import roomlab
from roomlab import widgets

server = roomlab.serve()
view = widgets.RoomView(server, room="export", period=0.2)
view""",
    """client = await roomlab.connect(server.url, server.token("ada"), name="export")
await asyncio.sleep(0.5)""",
    """view.stop()  # the last picture goes into the output above
await client.disconnect()
server.stop()
print(view.updates, base64.b64encode(view.png).decode()[-40:])""",
]


def test_a_stopped_view_leaves_its_last_picture_in_the_saved_notebook_and_its_html_export():
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    notebook.cells[-1].source = "import base64\n" + notebook.cells[-1].source
    NotebookClient(notebook, timeout=60, kernel_name="python3").execute()

    shown = notebook.cells[0].outputs
    assert len(shown) == 1 and shown[0].output_type == "display_data"
    data = shown[0].data
    assert "application/vnd.jupyter.widget-view+json" in data and "stopped" in data["text/plain"]
    updates, tail = notebook.cells[2].outputs[0].text.split()
    assert int(updates) >= 2  # it followed the room before it stopped
    assert data["image/png"].replace("\n", "").endswith(tail)  # the picture in the output is the last one
    assert base64.b64decode(data["image/png"]).startswith(b"\x89PNG")

    notebook.metadata.pop("widgets", None)  # committed notebooks carry no widget state
    html, _ = HTMLExporter().from_notebook_node(notebook)
    assert f"data:image/png;base64,{data['image/png'].replace(chr(10), '')[:60]}" in html
