"""The calendar status sync: the show-as of the event happening now sets the ClearVox status."""
