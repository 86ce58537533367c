"""Models: built from a factory and reloaded exactly (`factory`), a user's factory and hooks checked (`user_model`,
`hooks`), trained (`train`), scored and measured (`evaluate`), served fused (`fuse`).

`tasks.models:mlp` and `tasks.models:cnn1d` are the built-in factories' public names, recorded in every saved spec."""

from tasks.models.factory import cnn1d, mlp

__all__ = ["cnn1d", "mlp"]
