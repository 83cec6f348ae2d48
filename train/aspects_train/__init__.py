"""Training of the contract network (smp Unet effb3, 11 classes) with the serving contract.

Slices come from the client's own loading, windowing and reorientation
(``aspects_client.display_stack.prepare``) and its own resize/normalisation
(``aspects_client.server_reference``), so a model trained here sees exactly what Triton feeds
it.  Checkpoints load unchanged in ``aspects-export``.  Needs the ``[train]`` extra.
"""
