"""The hplus cloud node: gateway, patient API, registry, fleet and operations services.

The package root imports nothing, so importing one part (``cloud.presence``,
``cloud.registry``, ...) loads that part and what it needs, not the whole node. The
public modules are:

* :mod:`cloud.node`: :class:`~cloud.node.CloudNode` and ``serve``, the node's composition root;
* :mod:`cloud.config`: :class:`~cloud.config.NodeConfig`, the node's settings;
* :mod:`cloud.bearer`: the token format of hospital credentials and registry tokens;
* the subpackages ``census``, ``db``, ``fleet``, ``gateway``, ``operations``, ``presence``
  and ``registry``, each with its own ``__all__``.
"""

from __future__ import annotations

__all__: list[str] = []
