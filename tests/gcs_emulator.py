"""A local Google Cloud Storage emulator for the tests: `python tests/gcs_emulator.py PORT`.

`gcp-storage-emulator` in memory, with bucket `bkt`, and one gap filled: its media
downloads lack the `x-goog-generation` header that tensorstore (orbax's arrays) reads
to make its next conditional write, which then fails ("Malformed StorageGeneration").
Prints "up" once it serves.
"""

import logging
import sys
import time

from gcp_storage_emulator.handlers import objects

_download = objects.download


def _download_with_generation(request, response, storage, *args, **kwargs):
  _download(request, response, storage, *args, **kwargs)
  if response.status.value < 300:
    obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    response["x-goog-generation"] = str(obj["generation"])
    response["x-goog-metageneration"] = str(obj.get("metageneration", 1))


objects.download = _download_with_generation  # before `server` builds its routes from it

from gcp_storage_emulator import server  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(port: int) -> None:
  logging.disable(logging.CRITICAL)
  server.create_server("127.0.0.1", port, in_memory=True, default_bucket="bkt").start()
  print("up", flush=True)
  while True:
    time.sleep(3600)


if __name__ == "__main__":
  main(int(sys.argv[1]))
