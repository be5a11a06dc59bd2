"""Upper bounds checked when a recipe or a command line is validated, derived from what can
run: a schedule of more steps than this is a typo, not an experiment. (No imports: the CLI
parser reads them at start-up.)"""

MAX_STEPS = 100_000  #: T and sampling step counts
MAX_IMAGE_SIZE = 4096  #: side of square images, pixels
MAX_BATCH = 65_536  #: images per batch
MAX_SEED = 2**32 - 1  #: what every generator accepts
MAX_TRAIN_STEPS = 10**9  #: [train] steps
MAX_SAMPLES = 10**6  #: [sample] n and --n
MAX_MINUTES = 10**7  #: [train] max_minutes (19 years)
MAX_GIB = 2**20  #: memory budgets in GiB (a pebibyte)
MAX_ASPECT_RATIO = 32  #: longer side / shorter side of an image a loader accepts
