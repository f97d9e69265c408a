"""Every pipeline of ``Project.toml`` for one worker: ``tpp worker --app examples.pipelines.app``.

The project is loaded (validated, its task types imported) when the worker
starts; start runs with ``tpp pipeline run FILE --detach`` or ``engine.pipeline.start``.
"""

from __future__ import annotations

import pathlib

from engine.pipeline import load_project

project = load_project(pathlib.Path(__file__).with_name("Project.toml"))
workflows = project.workflows
activities = project.activities
