"""Everything about data, none of it about training: skeletons, datasets, transforms, codec, metrics."""
