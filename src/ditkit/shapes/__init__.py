"""The toy shapes domain: the demo data, its captions and the judges of its samples.

ditkit's engine (models, diffusion, accel, compress, pipelines, interop) never imports this
package; the command line, the trainer, the evaluation and the benchmarks do.

* `ditkit.shapes.data` — procedural shapes images: classes, named colours, captions, renderer, dataset.
* `ditkit.shapes.moving` — moving-shape clips, their captions and the pixel-based motion check.
* `ditkit.shapes.prompts` — the word vocabularies of the captions and the notes on off-caption prompts.
* `ditkit.shapes.classifier` — the small CNN that judges generated shapes (and gives FD features).
* `ditkit.shapes.colors` — the check that a text-to-image sample draws its caption's colours.
"""
