"""The project's commands that are not pipeline stages (`python -m commands.<name>`): composing params.yaml from
conf/ (compose), the fidelity table (fidelity), gathering experiments into claims (gather), pinning hub downloads
(pin), the pull-request comment (pr_comment) and the offline rehearsal of the study's path (rehearse). They use the
stages' shared code (stages/core) and never a stage module; DVC runs none of them.
"""

import stages  # noqa: F401  first: the same pinned CPU kernels, threads and hash seed as every stage process
