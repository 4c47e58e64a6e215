"""Bytes on disk or on a mirror -> float32 batches.

- `registry.py`: the datasets (file names, official checksums, mirrors)
- `idx.py`: reading and writing IDX files
- `download.py`: fetching from mirrors (checksums, retries, resume)
- `importer.py`: importing the four files from a local folder (`download --from`)
- `cache.py`: parsing the IDX files into a memory-mapped `.npy` cache
- `datadir.py`: where the data dir is, loading a dataset (fetching it first), validation splits
- `batches.py`: uint8 images -> normalised float32 batches
- `augment.py`: batch-vectorised augmentation (shifts, affine, elastic, colours, noise)
- `printed.py`: the printed digits shipped in `printed/` (`data.printed`)
"""
