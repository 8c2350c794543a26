"""The models: CLIP loading from the hub or a folder, the tiny offline CLIP, the fast layer, attention maps."""
