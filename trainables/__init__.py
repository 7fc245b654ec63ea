"""One trial's training: models, losses, the typed trial config, the engine and the Ray Train worker loop."""
