from flk_fast.cli import main

raise SystemExit(main())
