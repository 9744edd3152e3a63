"""lokiml: the importable library behind the lokiml Snakemake workflow.

Every rule's script in ``workflow/scripts/`` is a thin wrapper that unpacks
``snakemake.input/output/params`` and calls one function of this package.
Nothing here reads the ``snakemake`` object, so all of it can be unit-tested
and run outside Snakemake.
"""

__version__ = "0.1.0"
