"""Hand memory freed in bursts (table recovery, large batches) back to the OS once a minute."""

from streams.app import app
from streams.faustutil import release_free_memory


@app.timer(interval=60.0)
async def _release_free_memory() -> None:
    release_free_memory()
