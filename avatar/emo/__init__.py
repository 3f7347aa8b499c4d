"""EMO-style diffusion engine (Emote Portrait Alive, arXiv 2402.17485): models, streaming sampler, engine.

One file per model (``reference_net``, ``backbone``, ``autoencoder``, ``audio_encoder``, ``face_locator``,
``speed_encoder``), shared layers in ``attention`` and ``unet_blocks``, the typed config in ``config``,
building / saving / loading the components in ``checkpoint``, the sampler in ``pipeline``, the ``Engine``
implementation in ``engine``. Importing this package imports torch; ``server/`` must not.
"""
