"""What a build starts from: the files of the user's folder and the base image."""
