"""The riffmask studio: a browser app (Gradio) over the same stage functions as the commands.

:mod:`riffmask.app.studio` does the work (sound parts, spectrograms, masks, takes) without any web
code; :mod:`riffmask.app.models` keeps loaded pipelines; :mod:`riffmask.app.ui` is the page and its
named API. Start it with ``riffmask app`` (needs ``pip install 'riffmask[app]'``).
"""
