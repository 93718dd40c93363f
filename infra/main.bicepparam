using './main.bicep'

param baseName = 'fleetsec'
