package com.mdeploy.pose

import android.content.Context
import android.graphics.Canvas
import android.graphics.Color
import android.graphics.Paint
import android.util.AttributeSet
import android.view.View
import com.mdeploy.pose.generated.Pose
import com.mdeploy.pose.generated.PoseModelConfig
import com.mdeploy.pose.generated.ViewMapping

/** Draws every person's skeleton over the camera preview (which fills the view, cropping the frame), one colour per person. */
class OverlayView(
    context: Context,
    attrs: AttributeSet? = null,
) : View(context, attrs) {
    private var people: List<Pose> = emptyList()
    private val bonePaint =
        Paint().apply {
            strokeWidth = 8f
            style = Paint.Style.STROKE
            isAntiAlias = true
        }
    private val jointPaint =
        Paint().apply {
            color = Color.YELLOW
            style = Paint.Style.FILL
            isAntiAlias = true
        }

    /** Show `people` (in the pixels of a `frameWidth` x `frameHeight` frame). */
    fun show(
        people: List<Pose>,
        frameWidth: Int,
        frameHeight: Int,
    ) {
        this.people = people.map { ViewMapping.toView(it, frameWidth, frameHeight, width, height, fill = true) }
        invalidate()
    }

    override fun onDraw(canvas: Canvas) {
        super.onDraw(canvas)
        people.forEachIndexed { i, pose ->
            bonePaint.color = PERSON_COLORS[i % PERSON_COLORS.size]
            for ((a, b) in pose.bones()) {
                canvas.drawLine(a.x, a.y, b.x, b.y, bonePaint)
            }
            for (k in pose.keypoints) {
                if (k.score >= PoseModelConfig.SCORE_THRESHOLD) {
                    canvas.drawCircle(k.x, k.y, 10f, jointPaint)
                }
            }
        }
    }

    companion object {
        /** Bone colours, one per person in the order the model lists them (the first: green). */
        val PERSON_COLORS: IntArray = intArrayOf(Color.GREEN, Color.CYAN, Color.MAGENTA, Color.RED, Color.BLUE, Color.WHITE)
    }
}
