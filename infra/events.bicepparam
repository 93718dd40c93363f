using './events.bicep'

param baseName = 'fleetsec'
