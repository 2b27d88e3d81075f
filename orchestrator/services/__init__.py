"""Installing and keeping services: Docker, standalone and DATA services, and their sources.

Docker services (``docker_services``) are pulled or built (``docker_build``) from a registry, a git
repository (``git_source``) or a local directory, and their interfaces are detected from what
describes them (``interface_detection``). Standalone services (``standalone_services``) are
executables from a local path, a git repository or an uploaded archive (``archive``). DATA
services (``data_services``) are uploaded files kept encrypted at rest (``data_crypto``). Uploads
arrive over the WebSocket in chunks: the protocol (``uploads``), its disk side (``upload_store``)
and the handlers that install what arrived (``upload_manager``).

Running the jobs of these services is ``executors/``'s work; this package only installs them.
"""
