"""Benchmarks of the pipeline, the app and the loaders; run each as a module from the repository root, e.g.
`python -m benchmarks.gpu --smoke`. They print (and the GPU one records) figures rather than assert them."""
