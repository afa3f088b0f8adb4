"""Ray side of dynvid: the Train driver and worker loop, checkpoints, optimizers.

Import what you need from the submodules (``dynvid.engine.trainer.fit``); importing this
package does not import Ray.
"""
