"""builder: reproducible, checked model-serving images.

The pipeline, module by module: matrix -> check -> render -> lock -> build -> probe (backends)
-> pipeline (`builder validate`) -> report; plumbing below all of them (errors, log, files,
settings, yamlnodes, proc, resources, platforms, records, engine). README's "Layout" has more.
"""

__version__ = "0.1.0"
