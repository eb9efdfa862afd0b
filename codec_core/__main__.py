from codec_core.cli import main

raise SystemExit(main())
