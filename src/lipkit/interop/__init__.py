"""Models in and out of lipkit: `lipkit export` (to open_clip and Hugging Face CLIP folders) and
`lipkit import` (open_clip and Hugging Face CLIP models as lipkit run directories). layout: what
exports and how weights are renamed; openclip, hf: each library's files; agreement: the check
every conversion ends with; export, importer: the two commands (each writes its folder whole or
not at all: lipkit.files.staged_directory)."""
