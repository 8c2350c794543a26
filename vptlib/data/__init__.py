"""The data: classes, images, source layouts, deduplication, the prepared folder and its loader."""
