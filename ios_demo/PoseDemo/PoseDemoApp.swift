import SwiftUI

@main
struct PoseDemoApp: App {
    var body: some Scene {
        WindowGroup {
            ContentView()
        }
    }
}
