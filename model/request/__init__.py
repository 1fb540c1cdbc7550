"""Building a request: the interleaved prompt and its tokens, the typed request, structure and control pictures,
SIGMA-GEN subjects, and the output record that writes a request back down.

Public names are imported from their modules (``model.request.build``, ``model.request.prompt``, ...); the
package's own API is ``sigma_studio.model``.
"""
