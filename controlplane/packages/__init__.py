"""Packages: folders of user code uploaded by clients (PackageService),
kept content-addressed in the control plane's state folder, checked against
the specs that name them, handed to executors at launch, and deleted once no
stored deployment names them."""
