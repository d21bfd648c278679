from faceapp.cli import main

raise SystemExit(main())
