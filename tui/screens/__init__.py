"""The app's screens: one module per view, plus the help and the dialogs."""
