// Shared by the pages: filled in by the live-update client.
