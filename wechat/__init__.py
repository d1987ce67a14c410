"""The WeChat official-account bot: reports, my cases, notices and ratings."""
